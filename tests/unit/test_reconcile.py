"""Matching an ambiguous submit against the provider's list (pure): as exactly as the list allows."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2v.model.provider_facts import RETENTION_SECONDS
from s2v.model.reconcile import (
    ABSENT,
    CLOCK_SKEW_SECONDS,
    FOUND,
    MATCH_INPUT_URLS,
    MATCH_TIME_WINDOW,
    UNKNOWN,
    Fingerprint,
    Listed,
    Sorting,
    covers,
    input_digests,
    input_hosts,
    judge,
    list_reaches,
    recorded_inputs,
    submit_window,
    url_digest,
)

MODEL = "wavespeed-ai/wan-2.2/speech-to-video"
SENT_AT = 1_800_000_000.0
IMAGE = "https://bucket.s3.amazonaws.com/inputs/alice.png?X-Amz-Signature=aaa"
AUDIO = "https://bucket.s3.amazonaws.com/inputs/alice.wav?X-Amz-Signature=bbb"
FP = Fingerprint(MODEL, {"image": url_digest(IMAGE), "audio": url_digest(AUDIO)}, SENT_AT, SENT_AT + 30)
WINDOW = submit_window(FP, timeout=30)


def item(task: str, *, at: float | None = SENT_AT + 1, model: str = MODEL, inputs: dict[str, Any] | None = None
         ) -> Listed:
    return Listed(task, model, at, inputs or {})


def verdict(items: list[Listed], *, covered: bool = True, held: dict[str, str] | None = None,
            fp: Fingerprint = FP) -> Any:
    sorting = Sorting.empty()
    sorting.add(fp, items, WINDOW)
    return judge("job-a", sorting, covered=covered, held=held or {}, window=WINDOW, model=fp.model)


def test_the_window_runs_from_the_post_to_when_the_client_gave_up_with_skew_either_side() -> None:
    assert WINDOW.start == SENT_AT - CLOCK_SKEW_SECONDS
    assert WINDOW.end == SENT_AT + 30 + CLOCK_SKEW_SECONDS
    # a crash mid-POST (no end recorded): the client's timeout bounds it
    assert submit_window(Fingerprint(MODEL, {}, SENT_AT), timeout=45).end == SENT_AT + 45 + CLOCK_SKEW_SECONDS


def test_an_item_carrying_the_jobs_input_urls_is_an_exact_match_even_among_many() -> None:
    mine = item("t-mine", inputs={"image": IMAGE, "audio": AUDIO, "prompt": ""})
    others = [item(f"t-{i}", inputs={"image": IMAGE + str(i), "audio": AUDIO}) for i in range(5)]
    found = verdict([*others, mine, item("t-web", model="other/model")], covered=False)
    assert (found.outcome, found.provider_id, found.matched_by) == (FOUND, "t-mine", MATCH_INPUT_URLS)


def test_items_with_other_inputs_are_never_candidates_even_in_the_window() -> None:
    assert verdict([item("t-1", inputs={"image": "x", "audio": "y"})]).outcome == ABSENT


def test_without_inputs_one_unheld_item_of_the_model_in_the_window_is_a_weaker_match() -> None:
    found = verdict([item("t-1"), item("t-old", at=WINDOW.start - 1), item("t-web", model="other/model")])
    assert (found.outcome, found.provider_id, found.matched_by) == (FOUND, "t-1", MATCH_TIME_WINDOW)


def test_without_inputs_two_candidates_cannot_be_told_apart() -> None:
    result = verdict([item("t-1"), item("t-2", at=SENT_AT + 20)])
    assert result.outcome == UNKNOWN and "t-1" in result.evidence and "t-2" in result.evidence


def test_a_candidate_another_job_holds_is_not_ours() -> None:
    result = verdict([item("t-1"), item("t-2")], held={"t-2": "job-b"})
    assert (result.outcome, result.provider_id) == (FOUND, "t-1")
    assert verdict([item("t-2")], held={"t-2": "job-b"}).outcome == ABSENT


def test_a_candidate_this_job_already_holds_is_still_its_own() -> None:
    assert verdict([item("t-1")], held={"t-1": "job-a"}).provider_id == "t-1"


def test_an_exact_match_held_by_another_job_is_a_conflict_not_a_match() -> None:
    mine = item("t-mine", inputs={"image": IMAGE, "audio": AUDIO})
    assert verdict([mine], held={"t-mine": "job-b"}).outcome == UNKNOWN


def test_absence_and_the_weaker_match_need_the_whole_window_read() -> None:
    assert verdict([], covered=False).outcome == UNKNOWN
    assert verdict([item("t-1")], covered=False).outcome == UNKNOWN
    assert verdict([], covered=True).outcome == ABSENT


def test_an_item_without_a_time_could_be_in_the_window() -> None:
    assert verdict([item("t-1", at=None)]).provider_id == "t-1"


def test_the_same_task_on_two_pages_counts_once() -> None:
    assert verdict([item("t-1"), item("t-1")]).provider_id == "t-1"


@pytest.mark.parametrize(("oldest", "page_items", "total", "expected"), [
    (WINDOW.start - 1, 100, None, True),    # read back past the window's start
    (WINDOW.start + 1, 100, None, False),   # a full page, all newer: more may follow
    (WINDOW.start + 1, 40, None, True),     # a short page is the last one
    (WINDOW.start + 1, 100, 100, True),     # the total says this was all
    (None, 0, 0, True),                     # an empty list
])
def test_coverage(oldest: float | None, page_items: int, total: int | None, expected: bool) -> None:
    assert covers(window=WINDOW, oldest=oldest, page_items=page_items, page_size=100, page=1,
                  total=total) is expected


def test_the_list_cannot_settle_a_submission_older_than_its_seven_days() -> None:
    assert list_reaches(WINDOW, WINDOW.start + 3600)
    assert not list_reaches(WINDOW, WINDOW.start + RETENTION_SECONDS)


@given(st.lists(st.tuples(st.sampled_from(["t-1", "t-2", "t-3", "t-4"]), st.booleans(), st.booleans(),
                          st.floats(-600, 600)), max_size=4, unique_by=lambda row: row[0]),
       st.dictionaries(st.sampled_from(["t-1", "t-2", "t-3", "t-4"]), st.sampled_from(["job-a", "job-b"])),
       st.booleans())
def test_a_found_task_is_never_held_by_another_job_and_exact_beats_weak(
        rows: list[tuple[str, bool, bool, float]], held: dict[str, str], covered: bool) -> None:
    items = [item(task, at=SENT_AT + offset, inputs={"image": IMAGE, "audio": AUDIO} if exact else
                  ({"image": "other", "audio": "other"} if with_inputs else {}))
             for task, exact, with_inputs, offset in rows]
    result = verdict(items, covered=covered, held=held)
    if result.outcome == FOUND:
        assert held.get(result.provider_id, "job-a") == "job-a"
        if result.matched_by == MATCH_TIME_WINDOW:
            assert covered and not any(i.input.get("image") == IMAGE for i in items)
    if result.outcome == ABSENT:
        assert covered


# --- every input field of the model's request, not only image and audio ---------------------------

DUO = "wavespeed-ai/infinitetalk/multi"
LEFT = "https://bucket.s3.amazonaws.com/inputs/duo.left.wav?X-Amz-Signature=ccc"
RIGHT = "https://bucket.s3.amazonaws.com/inputs/duo.right.wav?X-Amz-Signature=ddd"
DUO_SENT = {"image": IMAGE, "left_audio": LEFT, "right_audio": RIGHT, "prompt": "", "order": "meanwhile"}
DUO_FP = Fingerprint(DUO, input_digests(DUO_SENT, ("image", "left_audio", "right_audio")), SENT_AT, SENT_AT + 30)


def duo(task: str, **inputs: Any) -> Listed:
    return item(task, model=DUO, inputs=inputs)


def test_a_two_speaker_task_is_matched_exactly_by_its_image_and_both_tracks_among_others_in_the_window() -> None:
    # Given three tasks of the model in the window, each showing its inputs
    others = [duo("t-other", image=IMAGE + "x", left_audio=LEFT + "x", right_audio=RIGHT + "x"),
              duo("t-web")]
    found = verdict([*others, duo("t-mine", **DUO_SENT)], fp=DUO_FP)
    assert (found.outcome, found.provider_id, found.matched_by) == (FOUND, "t-mine", MATCH_INPUT_URLS)


def test_one_other_url_in_any_field_the_job_sent_makes_an_item_not_its_task() -> None:
    # the same portrait and left track (a long talk's segments share the image), another right cut
    other_cut = duo("t-next-segment", image=IMAGE, left_audio=LEFT, right_audio=RIGHT + "&segment=2")
    assert verdict([other_cut], fp=DUO_FP).outcome == ABSENT
    mask_fp = Fingerprint("wavespeed-ai/infinitetalk", input_digests(
        {"image": IMAGE, "audio": AUDIO, "mask_image": IMAGE + "mask"}, ("image", "audio", "mask_image")), SENT_AT)
    another_mask = item("t-1", model=mask_fp.model, inputs={"image": IMAGE, "audio": AUDIO, "mask_image": "m2"})
    assert verdict([another_mask], fp=mask_fp).outcome == ABSENT


def test_a_url_alone_is_not_proof_an_item_showing_only_some_fields_is_a_time_window_candidate() -> None:
    # Given an item that shows the job's image but not its tracks: segments of one talk share the image
    partial = duo("t-1", image=IMAGE)
    found = verdict([partial], fp=DUO_FP)
    assert (found.outcome, found.matched_by) == (FOUND, MATCH_TIME_WINDOW)
    assert verdict([partial, duo("t-2")], fp=DUO_FP).outcome == UNKNOWN


def test_the_recorded_digests_cover_every_url_field_and_nothing_else() -> None:
    assert input_digests(DUO_SENT, ("image", "left_audio", "right_audio")) == {
        "image": url_digest(IMAGE), "left_audio": url_digest(LEFT), "right_audio": url_digest(RIGHT)}
    assert "mask_image" not in input_digests({"image": IMAGE, "audio": AUDIO}, ("image", "audio", "mask_image"))


def test_a_job_recorded_with_only_image_and_first_track_digests_is_compared_under_its_models_field_names() -> None:
    assert recorded_inputs(MODEL, "i", "a") == {"image": "i", "audio": "a"}
    assert recorded_inputs(DUO, "i", "l") == {"image": "i", "left_audio": "l"}
    legacy = Fingerprint(DUO, recorded_inputs(DUO, url_digest(IMAGE), url_digest(LEFT)), SENT_AT)
    # the two fields it kept are compared: both match, or one other URL rules the item out
    assert verdict([duo("t-1", **DUO_SENT)], fp=legacy).matched_by == MATCH_INPUT_URLS
    assert verdict([duo("t-1", image=IMAGE, left_audio=LEFT + "x", right_audio=RIGHT)], fp=legacy).outcome == ABSENT


HOSTED_FP = Fingerprint(MODEL, input_digests({"image": IMAGE, "audio": AUDIO}, ("image", "audio")), SENT_AT,
                        SENT_AT + 30, hosts=input_hosts({"image": IMAGE, "audio": AUDIO}, ("image", "audio")))


def test_the_hosts_recorded_are_the_urls_hosts_and_carry_no_secret() -> None:
    assert HOSTED_FP.hosts == {"image": "bucket.s3.amazonaws.com", "audio": "bucket.s3.amazonaws.com"}


def test_a_listed_url_on_the_host_the_job_sent_to_but_different_rules_the_item_out() -> None:
    other = "https://bucket.s3.amazonaws.com/inputs/bob.wav?X-Amz-Signature=ccc"
    assert verdict([item("t-1", inputs={"image": IMAGE, "audio": other})], fp=HOSTED_FP).outcome == ABSENT


def test_a_listed_url_the_provider_rehosted_cannot_be_compared_so_a_charged_task_is_never_called_absent() -> None:
    # The provider lists our audio under its own host: that field counts as not shown, so the item
    # stays a candidate of the time window (alone: found; never "not charged").
    rehosted = "https://cdn.provider.example/uploads/abc.wav"
    found = verdict([item("t-1", inputs={"image": IMAGE, "audio": rehosted})], fp=HOSTED_FP)
    assert (found.outcome, found.provider_id, found.matched_by) == (FOUND, "t-1", MATCH_TIME_WINDOW)
    both = verdict([item("t-1", inputs={"image": IMAGE, "audio": rehosted}), item("t-2")], fp=HOSTED_FP)
    assert both.outcome == UNKNOWN
