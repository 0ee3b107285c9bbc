"""The `s2v` command end to end: `s2v local up` in a subprocess, every other command run as a user runs it.

The deployed-stack path is exercised against moto's CloudFormation on the same loopback endpoint: a
stack whose outputs name the local bucket and table stands in for a real deployment.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest

from s2v_local import samples

pytestmark = pytest.mark.e2e
S2V = Path(sys.executable).with_name("s2v")  # the console script the project installs
START_TIMEOUT = 60.0


@dataclass
class LocalUp:
    process: subprocess.Popen[bytes]
    state_path: Path
    log: Path
    env: dict[str, str]
    state: dict[str, Any]

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.state["endpoint_url"], region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    return {**env, "COLUMNS": "200", "NO_COLOR": "1", **extra}


def s2v(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(S2V), *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalUp]:
    root = tmp_path_factory.mktemp("s2v-cli")
    state_path, log = root / "state" / "local.json", root / "local-up.log"
    env = cli_env(S2V_LOCAL_STATE=str(state_path))
    with log.open("wb") as out:
        process = subprocess.Popen([str(S2V), "local", "up", "--render-seconds", "0.3", "--poll-seconds", "1",
                                    "--queue-delay", "1"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not state_path.exists():
            assert process.poll() is None, f"`s2v local up` exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no state file after {START_TIMEOUT} s:\n{log.read_text()}"
            time.sleep(0.2)
        yield LocalUp(process, state_path, log, env, json.loads(state_path.read_text()))
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)  # stopping saves the table and bucket (local-data): slow on a loaded machine
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode == 0, log.read_text()
    assert not state_path.exists(), "the state file outlived the stack"
    assert "local stack stopped" in log.read_text()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("media")
    (folder / "alice.png").write_bytes(samples.portrait_png(256, 320))
    (folder / "alice.wav").write_bytes(samples.speech_wav(2.0))
    (folder / "notes.png").write_text("meeting notes, saved with the wrong name\n")
    return folder


@pytest.fixture(scope="module")
def delivered(local: LocalUp, media: Path) -> subprocess.CompletedProcess[str]:
    return s2v("drop", str(media / "alice.png"), str(media / "alice.wav"), "--folder", "talks", "--prompt",
               "a calm news anchor", "--resolution", "720p", "--seed", "7", "--wait", "--timeout", "60",
               env=local.env, timeout=90)


@pytest.fixture(scope="module")
def failed(local: LocalUp, media: Path) -> subprocess.CompletedProcess[str]:
    return s2v("drop", str(media / "notes.png"), str(media / "alice.wav"), "--folder", "talks", "--wait",
               "--timeout", "60", env=local.env, timeout=90)


def job_id_in(output: str) -> str:
    return next(line.split()[-1] for line in output.splitlines() if line.startswith(("job ", "new job ")))


# --- local up ----------------------------------------------------------------------------------------

def test_local_up_prints_its_endpoints_and_publishes_them_in_the_state_file(local: LocalUp) -> None:
    banner = local.log.read_text()
    state = local.state
    assert state["endpoint_url"].startswith("http://127.0.0.1:") and state["pid"] == local.process.pid
    assert f"AWS endpoint:       {state['endpoint_url']}" in banner
    assert f"bucket:             {state['bucket']}" in banner
    assert f"aws --endpoint-url {state['endpoint_url']} s3 cp alice.png s3://{state['bucket']}/inputs/talks/" in banner
    assert "MaxInFlightJobs 2, DailyBudgetUSD $20.00" in banner
    assert (state["daily_budget_usd"], state["max_in_flight_jobs"]) == (20.0, 2)


def test_a_second_local_up_on_the_same_state_file_refuses_to_start(local: LocalUp) -> None:
    result = s2v("local", "up", env=local.env, timeout=30)
    assert result.returncode == 2
    assert f"this checkout's local stack is already running (process {local.process.pid}" in result.stderr


# --- drop --------------------------------------------------------------------------------------------

def test_drop_wait_uploads_like_a_user_and_follows_the_job_to_its_video(
    local: LocalUp, delivered: subprocess.CompletedProcess[str],
) -> None:
    bucket = local.state["bucket"]
    assert delivered.returncode == 0, delivered.stdout + delivered.stderr
    out = delivered.stdout
    for key in ("inputs/talks/alice.json", "inputs/talks/alice.png", "inputs/talks/alice.wav"):
        assert f"uploaded s3://{bucket}/{key}" in out
    steps = [match.group(1) for match in re.finditer(r"^\s*-?\d+\.\ds\s+([A-Z]+)", out, re.MULTILINE)]
    assert steps[:2] == ["RECEIVED", "SUBMITTING"] and "SUBMITTED" in steps and steps[-1] == "DELIVERED"
    assert f"video: s3://{bucket}/outputs/talks/alice.mp4" in out
    s3 = local.client("s3")
    sidecar = json.loads(s3.get_object(Bucket=bucket, Key="inputs/talks/alice.json")["Body"].read())
    assert sidecar == {"prompt": "a calm news anchor", "resolution": "720p", "seed": 7}
    assert s3.head_object(Bucket=bucket, Key="outputs/talks/alice.mp4")["ContentLength"] > 1000


def test_drop_wait_reports_why_a_job_failed_and_where_the_error_report_is(
    local: LocalUp, failed: subprocess.CompletedProcess[str],
) -> None:
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "FAILED" in failed.stdout
    assert "failed: inputs/talks/notes.png is not an image" in failed.stderr
    assert f"error report: s3://{local.state['bucket']}/outputs/talks/notes.error.json" in failed.stderr
    # The same files would fail the same way: no retry is suggested, the way forward is.
    assert "s2v retry" not in failed.stdout and "a fixed upload starts a new job by itself" in failed.stdout


def test_drop_refuses_a_file_the_pipeline_would_ignore(local: LocalUp, media: Path) -> None:
    result = s2v("drop", str(media / "alice.wav"), str(media / "alice.wav"), env=local.env)
    assert result.returncode == 2
    assert "alice.wav: an image must end in jpeg, jpg, png, webp" in result.stderr


# --- reading -----------------------------------------------------------------------------------------

def test_jobs_lists_newest_first_and_filters(local: LocalUp, delivered: Any, failed: Any) -> None:
    good, bad = job_id_in(delivered.stdout), job_id_in(failed.stdout)
    listing = s2v("jobs", env=local.env)
    assert listing.returncode == 0, listing.stderr
    rows = [line for line in listing.stdout.splitlines() if line.startswith("│")]
    assert [row.split()[1] for row in rows[:2]] == [bad[:12], good[:12]]
    assert "talks/alice (png + wav)" in rows[1] and "DELIVERED" in rows[1] and "$0.18" in rows[1]
    assert "talks/notes (png + wav)" in rows[0] and "FAILED" in rows[0]
    only_failed = s2v("jobs", "--state", "failed", "--folder", "talks", "--since", "1h", env=local.env)
    assert bad[:12] in only_failed.stdout and good[:12] not in only_failed.stdout
    assert "0 job(s)" in s2v("jobs", "--folder", "elsewhere", env=local.env).stdout
    assert "0 job(s)" in s2v("jobs", "--since", "2999-01-01", env=local.env).stdout
    bad_since = s2v("jobs", "--since", "last tuesday", env=local.env)
    assert bad_since.returncode == 2 and "30m, 2h, 1d" in bad_since.stderr


def test_show_prints_the_record_and_history_by_id_prefix(local: LocalUp, delivered: Any) -> None:
    job_id = job_id_in(delivered.stdout)
    shown = s2v("show", job_id[:8], env=local.env)
    assert shown.returncode == 0, shown.stderr
    assert f"job id          {job_id}" in shown.stdout
    assert f"video           s3://{local.state['bucket']}/outputs/talks/alice.mp4" in shown.stdout
    assert '"resolution": "720p"' in shown.stdout and "status history" in shown.stdout
    for status in ("RECEIVED", "SUBMITTING", "SUBMITTED", "COMPLETED", "DELIVERED"):
        assert status in shown.stdout
    record = json.loads(s2v("show", job_id, "--json", env=local.env).stdout)
    assert record["job_id"] == job_id and record["params"]["seed"] == 7 and record["estimated_cost_usd"] == 0.18


def test_status_counts_states_and_compares_todays_spend_with_the_budget(local: LocalUp, delivered: Any,
                                                                        failed: Any) -> None:
    result = s2v("status", env=local.env)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"local stack at {local.state['endpoint_url']}" in out
    counts = {line.split()[1]: line.split()[3] for line in out.splitlines() if line.startswith("│")}
    assert counts["DELIVERED"] == "1" and counts["FAILED"] == "1" and counts["QUEUED"] == "0"
    assert "in flight: 0 of at most 2 (MaxInFlightJobs)" in out
    assert "$0.18 of $20.00 (DailyBudgetUSD" in out  # 2 s at 720p bills 3 s × $0.06; the failed job costs 0
    assert re.search(r"provider balance: \$[\d,]+\.\d\d \(WaveSpeed", out), out  # the emulator's account


def test_cost_books_only_submitted_jobs_by_day_and_folder(local: LocalUp, delivered: Any, failed: Any) -> None:
    result = s2v("cost", "--since", "1d", env=local.env)
    assert result.returncode == 0, result.stderr
    rows = [line.split("│")[1:-1] for line in result.stdout.splitlines() if line.startswith("│")]
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert [[cell.strip() for cell in row] for row in rows] == [[today, "talks", "1", "$0.18"], ["total", "", "1",
                                                                                             "$0.18"]]
    assert "daily budget $20.00" in result.stdout


# --- retry -------------------------------------------------------------------------------------------

def test_retry_renders_a_failed_job_again_as_a_linked_job(local: LocalUp, delivered: Any, failed: Any) -> None:
    bad = job_id_in(failed.stdout)
    result = s2v("retry", bad[:10], "--wait", "--timeout", "30", env=local.env, timeout=60)
    new = job_id_in(result.stdout)
    assert f"retrying {bad} (attempt 1)" in result.stdout and new != bad
    # The input is still a text file, so the new attempt fails the same way, through the same path.
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed: inputs/talks/notes.png is not an image" in result.stderr
    record = json.loads(s2v("show", new, "--json", env=local.env).stdout)
    assert (record["retry_of"], record["attempt"], record["status"]) == (bad, 1, "FAILED")
    again = s2v("retry", bad, env=local.env)
    assert again.returncode == 0 and f"was already retried as {new}" in again.stdout
    refused = s2v("retry", job_id_in(delivered.stdout), env=local.env)
    assert refused.returncode == 2
    assert "is DELIVERED; only FAILED or CANCELLED jobs can be retried" in refused.stderr


# --- cancel ------------------------------------------------------------------------------------------

def waiting_job(local: LocalUp, stem: str) -> str:
    """A job recorded but not yet validated (RECEIVED), not due for hours: nothing else touches it."""
    from s2v.adapters.store import JobStore
    from s2v.model.jobs import InputObject, Job, Status, job_id_for

    now = time.time()
    image, audio = InputObject(f"inputs/later/{stem}.png", "e1", 1), InputObject(f"inputs/later/{stem}.wav", "e2", 1)
    job = Job(job_id=job_id_for("later", stem, image, audio), status=Status.RECEIVED, version=0, folder="later",
              stem=stem, image=image, audio=audio, created_at=now, updated_at=now, next_check_at=now + 3600)
    JobStore(local.client("dynamodb"), local.state["table"]).create(job)
    return job.job_id


def test_cancel_stops_a_job_says_who_and_leaves_a_cancelled_report(local: LocalUp) -> None:
    job_id = waiting_job(local, "bob")
    result = s2v("cancel", job_id[:12], "--by", "ops on call", env=local.env)
    assert result.returncode == 0, result.stderr
    assert f"cancelled job {job_id} (was RECEIVED) as ops on call" in result.stdout
    assert "it never reached WaveSpeed: nothing was charged" in result.stdout
    key = "outputs/later/bob.cancelled.json"
    assert f"report: s3://{local.state['bucket']}/{key}" in result.stdout
    report = json.loads(local.client("s3").get_object(Bucket=local.state["bucket"], Key=key)["Body"].read())
    assert (report["code"], report["cancelled_by"]) == ("cancelled", "ops on call")
    record = json.loads(s2v("show", job_id, "--json", env=local.env).stdout)
    assert record["status"] == "CANCELLED" and record["final_cost_usd"] == 0
    again = s2v("cancel", job_id, env=local.env)
    assert again.returncode == 0 and "was already cancelled by ops on call" in again.stdout
    assert "CANCELLED" in s2v("jobs", "--state", "cancelled", env=local.env).stdout


def test_cancel_by_default_names_the_local_user(local: LocalUp) -> None:
    import getpass

    result = s2v("cancel", waiting_job(local, "carol"), env=local.env)
    assert result.returncode == 0 and f"as {getpass.getuser()}" in result.stdout


def test_a_delivered_job_cannot_be_cancelled(local: LocalUp, delivered: Any) -> None:
    result = s2v("cancel", job_id_in(delivered.stdout), env=local.env)
    assert result.returncode == 2
    assert "is DELIVERED: it has ended, so there is nothing to cancel" in result.stderr


def test_an_unknown_job_is_a_clear_error(local: LocalUp) -> None:
    for command in (("show", "ffff0000"), ("retry", "ffff0000"), ("cancel", "ffff0000")):
        result = s2v(*command, env=local.env)
        assert result.returncode == 2
        assert result.stderr.startswith("error: no job ffff0000") and "Traceback" not in result.stderr


# --- deployed stacks, through CloudFormation ---------------------------------------------------------

def deployed_env(local: LocalUp, **extra: str) -> dict[str, str]:
    # The caller's own AWS settings; CloudFormation (and everything else) answers on loopback.
    return cli_env(S2V_LOCAL_STATE=str(local.state_path.with_name("none.json")), AWS_REGION="us-east-1",
                   AWS_ENDPOINT_URL=local.state["endpoint_url"], AWS_ACCESS_KEY_ID="operator",
                   AWS_SECRET_ACCESS_KEY="operator", **extra)


def test_a_deployed_stack_is_found_by_name_through_its_outputs_and_parameters(local: LocalUp, delivered: Any) -> None:
    template = {
        "Parameters": {"DailyBudgetUSD": {"Type": "Number", "Default": 20},
                       "MaxInFlightJobs": {"Type": "Number", "Default": 2}},
        "Resources": {"Anything": {"Type": "AWS::SQS::Queue"}},
        "Outputs": {"BucketName": {"Value": local.state["bucket"]}, "JobsTableName": {"Value": local.state["table"]}},
    }
    local.client("cloudformation").create_stack(StackName="s2v-prod", TemplateBody=json.dumps(template),
                                                Parameters=[{"ParameterKey": "DailyBudgetUSD", "ParameterValue": "5"}])
    status = s2v("status", "--stack", "s2v-prod", env=deployed_env(local))
    assert status.returncode == 0, status.stderr
    assert "stack s2v-prod (us-east-1)" in status.stdout
    assert "$0.18 of $5.00 (DailyBudgetUSD" in status.stdout and "of at most 2" in status.stdout
    assert job_id_in(delivered.stdout)[:12] in s2v("jobs", "--stack", "s2v-prod", env=deployed_env(local)).stdout
    # no ApiKeySecretArn output: the balance is unavailable, and says why
    assert "provider balance: unavailable (stack s2v-prod (us-east-1) names no WaveSpeed API key" in status.stdout
    # a cancel on a deployed stack is recorded as the caller's AWS identity
    cancelled = s2v("cancel", waiting_job(local, "dave"), "--stack", "s2v-prod", env=deployed_env(local))
    assert cancelled.returncode == 0, cancelled.stderr
    assert re.search(r"\(was RECEIVED\) as arn:aws:", cancelled.stdout), cancelled.stdout


def test_an_unknown_stack_is_a_clear_error(local: LocalUp) -> None:
    result = s2v("jobs", "--stack", "no-such-stack", env=deployed_env(local))
    assert result.returncode == 2
    assert "error: no stack named no-such-stack in region us-east-1" in result.stderr


def test_a_stack_without_aws_credentials_is_a_clear_error(tmp_path: Path) -> None:
    env = {k: v for k, v in cli_env().items() if not k.startswith("AWS_")}
    env.update(S2V_LOCAL_STATE=str(tmp_path / "none.json"), AWS_REGION="us-east-1",
               AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "credentials"), AWS_CONFIG_FILE=str(tmp_path / "config"),
               AWS_EC2_METADATA_DISABLED="true")  # no instance-metadata lookup off the machine
    result = s2v("status", "--stack", "s2v-prod", env=env)
    assert result.returncode == 2
    assert "error: no usable AWS credentials to reach stack s2v-prod" in result.stderr
    assert "Traceback" not in result.stderr


# --- no local stack ----------------------------------------------------------------------------------

def test_without_a_running_local_stack_commands_say_how_to_start_one(tmp_path: Path) -> None:
    env = cli_env(S2V_LOCAL_STATE=str(tmp_path / "local.json"))
    default = s2v("jobs", env=env)
    assert default.returncode == 2
    assert "no s2v stack to talk to" in default.stderr and "s2v local up" in default.stderr
    assert "--stack NAME" in default.stderr
    explicit = s2v("status", "--local", env=env)
    assert explicit.returncode == 2 and "local stack is not running" in explicit.stderr
    # A state file left by a stack that died is not mistaken for a running one.
    (tmp_path / "local.json").write_text(json.dumps({
        "endpoint_url": "http://127.0.0.1:9", "bucket": "b", "table": "t", "webhook_base_url": "",
        "provider_base_url": "", "pid": 2 ** 22 + 12345}))
    stale = s2v("status", "--local", env=env)
    assert stale.returncode == 2 and "which no longer answer" in stale.stderr


# --- batches: drop FOLDER / MANIFEST, jobs --batch ---------------------------------------------------

def test_drop_a_manifest_uploads_its_files_follows_the_batch_and_jobs_batch_lists_it(
        local: LocalUp, tmp_path: Path) -> None:
    (tmp_path / "portrait.png").write_bytes(samples.portrait_png(96, 96))
    (tmp_path / "voice.wav").write_bytes(samples.speech_wav(0.6))
    manifest = tmp_path / "episode.batch.csv"
    manifest.write_text("image,audio,prompt,resolution\nportrait.png,voice.wav,take 1,\n"
                        "portrait.png,voice.wav,take 2,\nportrait.png,voice.wav,take 3,1080p\n")
    dropped = s2v("drop", str(manifest), "--folder", "cli-batch", "--timeout", "120", env=local.env, timeout=180)
    assert dropped.returncode == 1, dropped.stdout + dropped.stderr  # one row failed
    assert "uploaded 3 file(s) to s3://" in dropped.stdout
    assert "3 of 3 done: 2 delivered, 1 failed, 0 pending" in dropped.stdout, dropped.stdout
    landed = re.findall(r"s3://\S+/(outputs/cli-batch/\S+\.mp4)", dropped.stdout)
    assert len(landed) == 2, dropped.stdout
    assert "1080p" in dropped.stderr and "failed:" in dropped.stderr, dropped.stderr

    s3 = local.client("s3")
    bucket = local.state["bucket"]
    for key in landed:  # each row's job report names its batch and how far it was when written
        report = json.loads(s3.get_object(Bucket=bucket, Key=key.removesuffix(".mp4") + ".json")["Body"].read())
        assert report["batch"]["name"] == "episode.batch.csv"
        assert report["batch"]["rows"] == 3 and 1 <= report["batch"]["done"] <= 3
        assert report["batch"]["progress"] == f"{report['batch']['done']} of 3 done"

    for name in ("episode.batch.csv", "inputs/cli-batch/episode.batch.csv", "cli-batch/episode.batch.csv"):
        listed = s2v("jobs", "--batch", name, env=local.env)
        assert listed.returncode == 0, listed.stderr
        assert "3 row job(s), in row order" in listed.stdout
        assert listed.stdout.count("DELIVERED") == 2 and listed.stdout.count("FAILED") == 1, listed.stdout
        assert "3 of 3 done: 2 delivered, 1 failed, 0 pending" in listed.stdout
    unknown = s2v("jobs", "--batch", "nothing.batch.csv", env=local.env)
    assert unknown.returncode == 2 and "no batch for a manifest named 'nothing.batch.csv'" in unknown.stderr


def test_drop_a_folder_uploads_its_pairs_and_follows_them_to_their_videos(local: LocalUp, tmp_path: Path) -> None:
    pairs = tmp_path / "crew"
    pairs.mkdir()
    for stem in ("ann", "bob"):
        (pairs / f"{stem}.png").write_bytes(samples.portrait_png(96, 96))
        (pairs / f"{stem}.wav").write_bytes(samples.speech_wav(0.6))
    (pairs / "readme.txt").write_text("not media\n")
    # The folder's own params: a typo in its defaults stops the drop before anything is uploaded
    (pairs / "_defaults.json").write_text('{"promt": "a calm crew member"}')
    refused = s2v("drop", str(pairs), "--timeout", "120", env=local.env, timeout=180)
    assert refused.returncode == 2 and "promt" in refused.stderr, refused.stdout + refused.stderr
    s3 = local.client("s3")
    bucket = local.state["bucket"]
    assert not s3.list_objects_v2(Bucket=bucket, Prefix="inputs/crew/").get("KeyCount")
    (pairs / "_defaults.json").write_text('{"prompt": "a calm crew member"}')
    (pairs / "bob.json").write_text('{"seed": 7}')
    dropped = s2v("drop", str(pairs), "--timeout", "120", env=local.env, timeout=180)
    assert dropped.returncode == 0, dropped.stdout + dropped.stderr
    assert "uploaded 6 file(s) to s3://" in dropped.stdout and "readme.txt" in dropped.stdout
    assert "2 of 2 done: 2 delivered, 0 failed, 0 pending" in dropped.stdout
    assert {"outputs/crew/ann.mp4", "outputs/crew/bob.mp4"} <= set(re.findall(r"s3://\S+?/(outputs/\S+\.mp4)",
                                                                              dropped.stdout))
    # and its defaults and sidecars reached the stack: each job says where its params came from
    reports = {stem: json.loads(s3.get_object(Bucket=bucket, Key=f"outputs/crew/{stem}.json")["Body"].read())
               for stem in ("ann", "bob")}
    assert all(r["params"]["prompt"] == "a calm crew member" for r in reports.values())
    assert reports["ann"]["param_sources"]["prompt"] == "inputs/crew/_defaults.json"
    assert reports["bob"]["params"]["seed"] == 7 and reports["bob"]["param_sources"]["seed"] == "inputs/crew/bob.json"
