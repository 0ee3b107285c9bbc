"""Adversarial schedules against the one owner of ``outputs/`` (``s2v.flows.outputs``): crashes between
two calls (``crash_after``), stream redelivery, races pinned to one interleaving, and what one
delivery costs in S3 requests. Each test names the promise it attacks; the invariants checked are
``test_outputs_same_name.assert_outputs_hold``'s.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from test_outputs_same_name import _deliver_at_once, assert_outputs_hold, head, recorded_job

from helpers.crash import Crash, crash_after
from helpers.delivery_servers import VideoServer
from helpers.flow import Flow, make_flow
from s2v.flows import deliver, outputs
from s2v.model.jobs import Status
from s2v.model.outputs import CANCELLED, ERROR, REPORT, VIDEO, owner, plain_key


@pytest.fixture(scope="module")
def videos() -> Iterator[VideoServer]:
    with VideoServer() as server:
        yield server


@pytest.fixture(scope="module")
def flow(moto_endpoint: str, videos: VideoServer) -> Flow:
    return make_flow(moto_endpoint, uuid.uuid4().hex[:10], "http://127.0.0.1:9")


def _folder(tag: str) -> str:
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def _is_plain_video_copy(result: Any, bucket: Any, source: str, key: str, **condition: Any) -> bool:
    return key.endswith(".mp4") and not key.startswith("work/") and "IfMatch" in condition


# --- crashes ---------------------------------------------------------------------------------------

def test_a_crash_after_taking_the_plain_name_before_repointing_the_older_job_is_repaired_by_the_retry(
        flow: Flow, videos: VideoServer) -> None:
    """The newer job replaced the older job's video at the plain name and died before pointing the
    older job's record at its kept-aside copy. The stream retries the newer job; the retry found the
    plain name already its own and returned, so the older DELIVERED record named the newer video."""
    folder = _folder("crash-repoint")
    older = recorded_job(flow, videos, folder, "alice", 1_000.0, "deliver")
    deliver.on_job_change(older.job_id, flow.deps)
    newer = recorded_job(flow, videos, folder, "alice", 1_001.0, "deliver")
    with crash_after(outputs._Bucket, "copy", when=_is_plain_video_copy) as crash, pytest.raises(Crash):
        deliver.on_job_change(newer.job_id, flow.deps)
    assert crash.fired == 1
    assert deliver.on_job_change(newer.job_id, flow.deps) == "delivered"  # the stream's retry
    assert_outputs_hold(flow, [older, newer], f"outputs/{folder}/alice")


def test_a_crash_after_the_delivered_write_before_settling_leaves_no_record_naming_another_jobs_video(
        flow: Flow, videos: VideoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder("crash-settle")
    older = recorded_job(flow, videos, folder, "bob", 2_000.0, "deliver")
    newer = recorded_job(flow, videos, folder, "bob", 2_001.0, "deliver")
    real = outputs.place_video
    fired = []

    def then_newer(job: Any, *args: Any, **kwargs: Any) -> str:
        key = real(job, *args, **kwargs)
        if job.job_id == older.job_id and not fired:
            fired.append(1)
            deliver.on_job_change(newer.job_id, flow.deps)  # moves the older video aside meanwhile
        return key

    monkeypatch.setattr(outputs, "place_video", then_newer)
    with crash_after(flow.deps.store, "transition", when=lambda r, job, *a, **k: job.job_id == older.job_id), \
            pytest.raises(Crash):
        deliver.on_job_change(older.job_id, flow.deps)
    monkeypatch.undo()
    deliver.on_job_change(older.job_id, flow.deps)  # a redelivered record (if one came) changes nothing
    assert_outputs_hold(flow, [older, newer], f"outputs/{folder}/bob")


def test_a_crash_in_a_withdrawal_between_the_delete_and_the_put_back_still_puts_the_older_video_back(
        flow: Flow, videos: VideoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """withdraw deleted the cancelled job's video at the plain name, then died before copying the
    replaced older video back: the retry found nothing of the cancelled job left, and the plain name
    stayed empty although the older job is delivered."""
    from s2v.flows.cancel import cancel

    folder = _folder("crash-withdraw")
    earlier = recorded_job(flow, videos, folder, "carl", 3_000.0, "deliver")
    deliver.on_job_change(earlier.job_id, flow.deps)
    reupload = recorded_job(flow, videos, folder, "carl", 3_001.0, "deliver")
    real = outputs.place_video

    def placed_then_cancelled(*args: Any, **kwargs: Any) -> str:
        key = real(*args, **kwargs)
        cancel(reupload.job_id, flow.deps, by="tester")
        return key

    monkeypatch.setattr(outputs, "place_video", placed_then_cancelled)
    video = plain_key(f"outputs/{folder}/carl", VIDEO)
    # the process dies right after its first write that takes the re-upload's video off the plain name
    # (a delete, or a copy over it), once the re-upload is cancelled
    fired: list[str] = []

    def dying(name: str) -> Any:
        real_call = getattr(outputs._Bucket, name)

        def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            result = real_call(self, *args, **kwargs)
            key = args[1] if name == "copy" else args[0]
            if key == video and not fired and flow.job(reupload.job_id).status is Status.CANCELLED:
                fired.append(name)
                raise Crash(f"after {name}")
            return result
        return call

    monkeypatch.setattr(outputs._Bucket, "delete", dying("delete"))
    monkeypatch.setattr(outputs._Bucket, "copy", dying("copy"))
    with pytest.raises(Crash):
        deliver.on_job_change(reupload.job_id, flow.deps)
    monkeypatch.undo()
    assert fired
    deliver.on_job_change(reupload.job_id, flow.deps)  # the stream's retry (the job is CANCELLED now)
    deliver.on_job_change(reupload.job_id, flow.deps)
    assert flow.job(reupload.job_id).status is Status.CANCELLED
    assert_outputs_hold(flow, [earlier, reupload], f"outputs/{folder}/carl")


# --- races pinned to one interleaving ------------------------------------------------------------------

def test_a_withdrawal_puts_back_the_newest_remaining_video_not_merely_the_one_it_replaced(
        flow: Flow, videos: VideoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A (oldest) holds the name; C (newest) takes it, moving A aside; B (between them) delivers and
    keeps its own key since C is newer; then C is cancelled. withdraw put A back, over B."""
    from s2v.flows.cancel import cancel

    folder = _folder("putback")
    a = recorded_job(flow, videos, folder, "dora", 4_000.0, "deliver")
    b = recorded_job(flow, videos, folder, "dora", 4_001.0, "deliver")
    c = recorded_job(flow, videos, folder, "dora", 4_002.0, "deliver")
    deliver.on_job_change(a.job_id, flow.deps)
    real = outputs.place_video

    def c_placed_then_b_then_cancel(job: Any, *args: Any, **kwargs: Any) -> str:
        key = real(job, *args, **kwargs)
        if job.job_id == c.job_id:
            deliver.on_job_change(b.job_id, flow.deps)
            cancel(c.job_id, flow.deps, by="tester")
        return key

    monkeypatch.setattr(outputs, "place_video", c_placed_then_b_then_cancel)
    assert deliver.on_job_change(c.job_id, flow.deps) == "cancelled"
    monkeypatch.undo()
    deliver.on_job_change(c.job_id, flow.deps)
    assert_outputs_hold(flow, [a, b, c], f"outputs/{folder}/dora")


def test_an_older_failure_reported_while_a_newer_video_is_placed_leaves_no_stale_error_beside_it(
        flow: Flow, videos: VideoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The newer job surveyed the name, then the older job's error report took the plain
    ``.error.json``, then the newer video took the plain name and retired markers from its survey,
    which did not list the error report: a stale error stayed beside the newer video."""
    folder = _folder("stale-error")
    failed = recorded_job(flow, videos, folder, "erin", 5_000.0, "fail")
    newer = recorded_job(flow, videos, folder, "erin", 5_001.0, "deliver")
    real = outputs.survey
    fired = []

    def surveyed_then_failure(job: Any, deps: Any) -> outputs.Survey:
        seen = real(job, deps)
        if job.job_id == newer.job_id and not fired:
            fired.append(1)
            deliver.on_job_change(failed.job_id, flow.deps)
        return seen

    monkeypatch.setattr(outputs, "survey", surveyed_then_failure)
    assert deliver.on_job_change(newer.job_id, flow.deps) == "delivered"
    monkeypatch.undo()
    assert_outputs_hold(flow, [failed, newer], f"outputs/{folder}/erin")


def test_an_older_failure_whose_check_saw_no_video_leaves_no_stale_error_beside_the_newer_video(
        flow: Flow, videos: VideoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The older job's error report checked the plain video (none yet), then the newer video was
    placed and retired markers (none yet), then the error report took the plain name."""
    folder = _folder("stale-error2")
    failed = recorded_job(flow, videos, folder, "finn", 6_000.0, "fail")
    newer = recorded_job(flow, videos, folder, "finn", 6_001.0, "deliver")
    real = outputs._newer_outcome
    fired = []

    def checked_then_newer_delivers(job: Any, deps: Any, *args: Any) -> bool:
        answer = real(job, deps, *args)
        if job.job_id == failed.job_id and not fired:
            fired.append(1)
            assert deliver.on_job_change(newer.job_id, flow.deps) == "delivered"
        return answer

    monkeypatch.setattr(outputs, "_newer_outcome", checked_then_newer_delivers)
    deliver.on_job_change(failed.job_id, flow.deps)
    monkeypatch.undo()
    assert_outputs_hold(flow, [failed, newer], f"outputs/{folder}/finn")


def test_an_older_jobs_report_never_sits_at_the_plain_name_beside_a_newer_jobs_video(
        flow: Flow, videos: VideoServer) -> None:
    """The newer job placed its video and died before its report; the older job's video then went
    aside (correctly) but its report took the plain ``.json`` beside the newer video. Then the newer
    job is cancelled: its video is withdrawn, and the older job's video stays aside with no plain name."""
    from s2v.flows.cancel import cancel

    folder = _folder("report-follows")
    older = recorded_job(flow, videos, folder, "gwen", 7_000.0, "deliver")
    newer = recorded_job(flow, videos, folder, "gwen", 7_001.0, "deliver")
    base = f"outputs/{folder}/gwen"
    with crash_after(outputs, "place_video", when=lambda r, job, *a, **k: job.job_id == newer.job_id), \
            pytest.raises(Crash):
        deliver.on_job_change(newer.job_id, flow.deps)
    deliver.on_job_change(older.job_id, flow.deps)
    report = head(flow, plain_key(base, REPORT))
    assert report is None or owner(report)[0] == owner(head(flow, plain_key(base, VIDEO)))[0], \
        "the plain report is not the plain video's job's"
    cancel(newer.job_id, flow.deps, by="tester")
    deliver.on_job_change(newer.job_id, flow.deps)
    assert_outputs_hold(flow, [older, newer], base)


# --- stream redelivery --------------------------------------------------------------------------------

def test_every_stream_record_of_a_delivery_redelivered_changes_nothing(flow: Flow, videos: VideoServer) -> None:
    folder = _folder("redeliver")
    jobs = [recorded_job(flow, videos, folder, "hana", 8_000.0 + i, o)
            for i, o in enumerate(("deliver", "fail", "deliver", "cancel"))]
    for job in [*jobs, *jobs, *reversed(jobs)]:
        deliver.on_job_change(job.job_id, flow.deps)
    before = {o["Key"]: o["ETag"] for o in flow.s3.list_objects_v2(
        Bucket=flow.bucket, Prefix=f"outputs/{folder}/")["Contents"]}
    for job in jobs:
        deliver.on_job_change(job.job_id, flow.deps)
    after = {o["Key"]: o["ETag"] for o in flow.s3.list_objects_v2(
        Bucket=flow.bucket, Prefix=f"outputs/{folder}/")["Contents"]}
    assert after == before
    assert_outputs_hold(flow, jobs, f"outputs/{folder}/hana")


# --- what one delivery costs ---------------------------------------------------------------------------

def _count_requests(flow: Flow) -> Counter[str]:
    calls: Counter[str] = Counter()
    flow.deps.objects.s3.meta.events.register("before-call.s3.*", lambda model, **_: calls.update([model.name]))
    return calls


def test_a_first_delivery_of_a_new_name_costs_few_s3_requests(flow: Flow, videos: VideoServer) -> None:
    calls = _count_requests(flow)
    folder = _folder("count")
    job = recorded_job(flow, videos, folder, "ivan", 9_000.0, "deliver")
    calls.clear()
    assert deliver.on_job_change(job.job_id, flow.deps) == "delivered"
    fresh = dict(calls)
    older = recorded_job(flow, videos, folder, "ivan", 8_000.0, "deliver")  # an older render finishing last
    calls.clear()
    deliver.on_job_change(older.job_id, flow.deps)
    aside = dict(calls)
    newer = recorded_job(flow, videos, folder, "ivan", 9_500.0, "deliver")  # a re-upload replacing the name
    calls.clear()
    deliver.on_job_change(newer.job_id, flow.deps)
    replacing = dict(calls)
    print("fresh", fresh, "\naside", aside, "\nreplacing", replacing)
    # the copy from the provider (a single PUT at this size, then the size check's HEAD), one COPY to the
    # plain name tried create-only before any read, one LIST after that write (the markers a survey made
    # before it could miss), one PUT of the report (create-only too); no read after the DELIVERED write
    # (a mover bumps a record still delivering instead)
    assert fresh == {"HeadObject": 1, "ListObjectsV2": 1, "PutObject": 2, "CopyObject": 1}
    # replacing an older job's name: for the video and the report each, the create-only write refused
    # (412), a HEAD of the holder, its keep-aside COPY, the conditional write
    # an older job going aside: its create-only write refused, then the HEAD that sees the newer holder
    assert sum(aside.values()) <= sum(fresh.values()) + 2 and sum(replacing.values()) <= sum(fresh.values()) + 6
    assert_outputs_hold(flow, [older, job, newer], f"outputs/{folder}/ivan")


# --- name shapes -----------------------------------------------------------------------------------

def test_a_video_from_before_ranks_kept_aside_never_lands_on_another_stems_video(
        flow: Flow, videos: VideoServer) -> None:
    """An object at the plain name without a job (an earlier release's) is kept aside as
    ``<name>.previous-<etag12>.mp4``, with no condition on the target; that is also the video key of
    a stem ``<name>.previous-<etag12>``, which ``is_reserved`` did not refuse: its delivered video was
    overwritten."""
    folder = _folder("legacy")
    base = f"outputs/{folder}/alice"
    flow.put(plain_key(base, VIDEO), b"an older release's video", ContentType="video/mp4")
    etag = flow.s3.head_object(Bucket=flow.bucket, Key=plain_key(base, VIDEO))["ETag"].strip('"')[:12]
    squatter = recorded_job(flow, videos, folder, f"alice.previous-{etag}", 10_000.0, "deliver")
    deliver.on_job_change(squatter.job_id, flow.deps)
    job = recorded_job(flow, videos, folder, "alice", 10_001.0, "deliver")
    deliver.on_job_change(job.job_id, flow.deps)
    stored = flow.job(squatter.job_id)
    found = head(flow, stored.output_key)
    assert found is not None and owner(found)[0] == squatter.job_id, "the other stem's video was overwritten"


# --- markers among themselves ----------------------------------------------------------------------

def _plain_markers_are_the_newest_outcomes(flow: Flow, jobs: list[Any], base: str) -> None:
    """At most one marker at a plain name, and it is the newest failed-or-cancelled job's."""
    plain = {kind: head(flow, plain_key(base, kind)) for kind in (ERROR, CANCELLED)}
    held = {kind: owner(found) for kind, found in plain.items() if found is not None}
    assert len(held) <= 1, f"both an error and a cancelled marker at the plain name: {held}"
    ended = [flow.job(j.job_id) for j in jobs]
    ended = [j for j in ended if j.status in (Status.FAILED, Status.CANCELLED)]
    if held and ended:
        newest = max(ended, key=lambda j: (j.created_at, j.job_id))
        assert next(iter(held.values()))[0] == newest.job_id, "the plain marker is not the newest outcome's"


def test_an_older_failure_reported_after_a_newer_cancel_does_not_take_a_plain_name_beside_it(
        flow: Flow, videos: VideoServer) -> None:
    folder = _folder("markers")
    failed = recorded_job(flow, videos, folder, "jack", 11_000.0, "fail")
    cancelled = recorded_job(flow, videos, folder, "jack", 11_001.0, "cancel")
    deliver.on_job_change(cancelled.job_id, flow.deps)
    deliver.on_job_change(failed.job_id, flow.deps)  # the older job's failure is reported last
    assert_outputs_hold(flow, [failed, cancelled], f"outputs/{folder}/jack")
    _plain_markers_are_the_newest_outcomes(flow, [failed, cancelled], f"outputs/{folder}/jack")


def test_a_newer_cancel_whose_survey_missed_an_older_error_moves_it_aside(
        flow: Flow, videos: VideoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder("markers2")
    failed = recorded_job(flow, videos, folder, "kim", 12_000.0, "fail")
    cancelled = recorded_job(flow, videos, folder, "kim", 12_001.0, "cancel")
    real = outputs.survey
    fired = []

    def surveyed_then_failure(job: Any, deps: Any) -> outputs.Survey:
        seen = real(job, deps)
        if job.job_id == cancelled.job_id and not fired:
            fired.append(1)
            deliver.on_job_change(failed.job_id, flow.deps)
        return seen

    monkeypatch.setattr(outputs, "survey", surveyed_then_failure)
    deliver.on_job_change(cancelled.job_id, flow.deps)
    monkeypatch.undo()
    assert fired
    assert_outputs_hold(flow, [failed, cancelled], f"outputs/{folder}/kim")
    _plain_markers_are_the_newest_outcomes(flow, [failed, cancelled], f"outputs/{folder}/kim")


# --- everything at once --------------------------------------------------------------------------------

def test_deliveries_a_failure_and_a_cancel_during_delivery_at_once_keep_every_promise(
        flow: Flow, videos: VideoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading

    from s2v.flows.cancel import cancel

    real = outputs.place_video
    doomed: set[str] = set()

    def placed_then_maybe_cancelled(job: Any, *args: Any, **kwargs: Any) -> str:
        key = real(job, *args, **kwargs)
        if job.job_id in doomed:
            cancel(job.job_id, flow.deps, by="tester")
        return key

    monkeypatch.setattr(outputs, "place_video", placed_then_maybe_cancelled)
    for round_ in range(4):
        folder = _folder(f"mix{round_}")
        outcomes = ["deliver", "fail", "deliver", "deliver", "fail"]
        jobs = [recorded_job(flow, videos, folder, "lena", 13_000.0 + i, o) for i, o in enumerate(outcomes)]
        doomed.add(jobs[3 if round_ % 2 == 0 else 2].job_id)  # the newest video, or a middle one
        barrier = threading.Barrier(len(jobs))

        threads = [threading.Thread(target=_deliver_at_once, args=(flow, job, barrier)) for job in reversed(jobs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for job in jobs:  # the stream's records that came after (the CANCELLED one), and redeliveries
            deliver.on_job_change(job.job_id, flow.deps)
        assert_outputs_hold(flow, jobs, f"outputs/{folder}/lena")


def test_a_crash_while_moving_a_stale_marker_aside_never_leaves_its_record_naming_nothing(
        flow: Flow, videos: VideoServer) -> None:
    """A newer video moves an older error report aside: copy, delete the plain one, point the failed
    job's record. A death after the delete left the record naming a key that no longer exists, and
    the retry (the plain marker gone) had nothing left to point."""
    folder = _folder("crash-retire")
    failed = recorded_job(flow, videos, folder, "mona", 14_000.0, "fail")
    deliver.on_job_change(failed.job_id, flow.deps)
    newer = recorded_job(flow, videos, folder, "mona", 14_001.0, "deliver")
    error = plain_key(f"outputs/{folder}/mona", ERROR)
    with crash_after(outputs._Bucket, "delete", when=lambda r, b, key, *a, **k: key == error) as crash, \
            pytest.raises(Crash):
        deliver.on_job_change(newer.job_id, flow.deps)
    assert crash.fired == 1
    assert deliver.on_job_change(newer.job_id, flow.deps) == "delivered"  # the stream's retry
    assert_outputs_hold(flow, [failed, newer], f"outputs/{folder}/mona")


def test_a_crash_while_an_older_error_steps_aside_from_a_newer_video_is_finished_by_the_retry(
        flow: Flow, videos: VideoServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The older failure's report took the plain name just after a newer video was placed (each missed
    the other before writing); reading after its write it sees the video and steps aside, and dies
    between the copy and the delete. The retry wrote the report aside but left its own plain copy."""
    folder = _folder("crash-stepaside")
    failed = recorded_job(flow, videos, folder, "nina", 15_000.0, "fail")
    newer = recorded_job(flow, videos, folder, "nina", 15_001.0, "deliver")
    real = outputs._newer_outcome
    fired = []

    def checked_then_newer_delivers(job: Any, deps: Any, *args: Any) -> bool:
        answer = real(job, deps, *args)
        if job.job_id == failed.job_id and not fired:
            fired.append(1)
            assert deliver.on_job_change(newer.job_id, flow.deps) == "delivered"
        return answer

    monkeypatch.setattr(outputs, "_newer_outcome", checked_then_newer_delivers)
    with crash_after(outputs, "_keep_aside", when=lambda r, deps, base, kind, current: kind is ERROR), \
            pytest.raises(Crash):
        deliver.on_job_change(failed.job_id, flow.deps)
    monkeypatch.undo()
    deliver.on_job_change(failed.job_id, flow.deps)  # the stream's retry of the FAILED record
    assert_outputs_hold(flow, [failed, newer], f"outputs/{folder}/nina")
    assert head(flow, plain_key(f"outputs/{folder}/nina", ERROR)) is None


def test_the_cancelled_record_of_a_job_that_never_delivered_costs_few_s3_requests(
        flow: Flow, videos: VideoServer) -> None:
    calls = _count_requests(flow)
    folder = _folder("count-cancel")
    job = recorded_job(flow, videos, folder, "omar", 16_000.0, "cancel")
    calls.clear()
    deliver.on_job_change(job.job_id, flow.deps)
    first = dict(calls)
    calls.clear()
    deliver.on_job_change(job.job_id, flow.deps)  # a redelivered record
    again = dict(calls)
    print("cancel", first, "\nagain", again)
    # Measured: 8 HEADs, 1 LIST, 1 PUT, both times. withdraw HEADs the 4 keys it could have written (plain and
    # kept-aside video and report) even for a job cancelled before any copy; the entry costs a LIST and a PUT,
    # then reads after the write (the video and the other marker, then the other marker again to retire it)
    # and one HEAD to settle. A redelivered record rewrites the same entry (PUT) and pays all of it again.
    assert sum(first.values()) <= 10 and sum(again.values()) <= 10
