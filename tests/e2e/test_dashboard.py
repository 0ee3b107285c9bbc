"""`s2v dashboard` in headless Chromium, against the embedded local stack with real jobs.

One stack for the module (DailyBudgetUSD $0.10: one 480p render of 1 s costs $0.09, so the next
pair waits for the budget), holding a delivered, a failed and a queued job; `s2v dashboard` runs
as a user runs it, in a subprocess, and Chromium (Debian's package, driven by Selenium) reads and
clicks its pages. Screenshots go to a temporary folder, printed at the end of the module.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
import requests

from helpers.browser import chromium, wait_until
from s2v.adapters.store import deserialize_item
from s2v.model.jobs import Job
from s2v_local import samples

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]
S2V = Path(sys.executable).with_name("s2v")
FOLDER = "dash"


@dataclass
class Stack:
    state: Any  # s2v_cli.target.LocalState
    env: dict[str, str]

    def client(self, service: str) -> Any:
        return boto3.client(service, endpoint_url=self.state.endpoint_url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def items(self) -> list[dict[str, Any]]:
        ddb = self.client("dynamodb")
        pages = ddb.get_paginator("scan").paginate(TableName=self.state.table)
        # Job items hold only what differs from the defaults (Job.to_item): read as the store reads them.
        return [{**Job.from_dict(item).to_dict(), **item} for item in (
            deserialize_item(i) for p in pages for i in p.get("Items", [])
            if i.get("record_type", {}).get("S") == "job")]  # not the guard's or a batch's items

    def job(self, stem: str, **match: Any) -> dict[str, Any]:
        found = [j for j in self.items() if j["stem"] == stem and all(j.get(k) == v for k, v in match.items())]
        return max(found, key=lambda j: j["created_at"]) if found else {}

    def drop(self, stem: str, image: bytes, seconds: float = 1.0) -> None:
        s3 = self.client("s3")
        s3.put_object(Bucket=self.state.bucket, Key=f"inputs/{FOLDER}/{stem}.png", Body=image)
        s3.put_object(Bucket=self.state.bucket, Key=f"inputs/{FOLDER}/{stem}.wav", Body=samples.speech_wav(seconds))


def settled(stack: Stack, stem: str, statuses: tuple[str, ...], timeout: float = 60) -> dict[str, Any]:
    return wait_until(lambda: (lambda j: j if j.get("status") in statuses and (
        j["status"] != "FAILED" or j.get("error_key")) else None)(stack.job(stem)),
        timeout=timeout, what=f"job {stem} in {statuses}")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from s2v_cli.target import LocalOptions, running_local_stack

    root = tmp_path_factory.mktemp("dashboard-stack")
    options = LocalOptions(render_seconds=0.3, webhooks=True, poll_interval_seconds=1, queue_delay_seconds=1,
                           daily_budget_usd=0.1, max_in_flight_jobs=2)
    with running_local_stack(options, root / "local.json") as state:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
        env.update(S2V_LOCAL_STATE=str(root / "local.json"), PYTHONUNBUFFERED="1", COLUMNS="200", NO_COLOR="1")
        made = Stack(state, env)
        made.drop("alice", samples.portrait_png(256, 320))
        made.drop("notes", b"meeting notes, saved with the wrong name\n")
        settled(made, "alice", ("DELIVERED",))
        settled(made, "notes", ("FAILED",))
        made.drop("waiting", samples.portrait_png(128, 160))  # the budget is spent: it queues
        settled(made, "waiting", ("QUEUED",))
        # Two rows of one manifest with one portrait, and a name whose folder part holds a slash-looking tag.
        s3 = made.client("s3")
        for name, body in (("face.png", samples.portrait_png(96, 120)), ("intro.wav", samples.speech_wav(1.0)),
                           ("outro.wav", samples.speech_wav(1.2))):
            s3.put_object(Bucket=state.bucket, Key=f"inputs/{FOLDER}/show/{name}", Body=body)
        s3.put_object(Bucket=state.bucket, Key=f"inputs/{FOLDER}/show/ep1.batch.csv",
                      Body=b"image,audio,output_name\nface.png,intro.wav,{stem}-intro\nface.png,outro.wav,\n")
        s3.put_object(Bucket=state.bucket, Key=f"inputs/{FOLDER}/<b>bold</b>.png", Body=samples.portrait_png(64, 80))
        s3.put_object(Bucket=state.bucket, Key=f"inputs/{FOLDER}/<b>bold</b>.wav", Body=samples.speech_wav(1.0))
        wait_until(lambda: len([j for j in made.items() if j.get("batch_key")]) == 2 and made.job("b>"),
                   timeout=60, what="the manifest's two row jobs and the <b>bold</b> pair's job")
        yield made


@pytest.fixture(scope="module")
def dashboard(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """`s2v dashboard --no-open`, as an operator runs it; yields the URL it prints."""
    log = tmp_path_factory.mktemp("dashboard-log") / "dashboard.log"
    with log.open("wb") as out:
        process = subprocess.Popen([str(S2V), "dashboard", "--no-open", "--local"], env=stack.env, stdout=out,
                                   stderr=subprocess.STDOUT)
    try:
        url = wait_until(lambda: re.search(r"open (http://127\.0\.0\.1:\d+/\?key=\S+)", log.read_text()),
                         timeout=30, what=f"the dashboard's URL in {log}").group(1)
        yield url
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert "Traceback" not in log.read_text(), log.read_text()


@pytest.fixture(scope="module")
def screens(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("dashboard-screenshots")
    yield folder
    print(f"\ndashboard screenshots: {folder}")


@pytest.fixture(scope="module")
def browser(dashboard: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        driver.get(dashboard)  # the printed URL: its key becomes a cookie and leaves the address bar
        wait_until(lambda: "key=" not in driver.current_url and driver.find_element("id", "state-counts"),
                   what="the overview after the first visit")
        yield driver


def base_url(dashboard: str) -> str:
    return dashboard.split("/?", 1)[0]


def shot(driver: Any, screens: Path, name: str) -> None:
    driver.save_screenshot(str(screens / f"{name}.png"))


def text_of(driver: Any, element_id: str) -> str:
    return str(driver.find_element("id", element_id).text)


# --- overview ------------------------------------------------------------------------------------------

def test_overview_counts_equal_the_table_and_show_the_guard_spend_failures_and_render_times(
    stack: Stack, dashboard: str, browser: Any, screens: Path,
) -> None:
    browser.get(base_url(dashboard) + "/")
    # Figures still being read when the page answered (a busy machine) come with the next refreshes.
    wait_until(lambda: not browser.find_elements("id", "still-reading"), timeout=30, what="every overview figure")
    table = Counter(j["status"] for j in stack.items())
    rows = browser.find_elements("css selector", "#state-counts tbody tr")
    shown = {r.get_attribute("data-state"): int(r.find_element("css selector", "td.num").text) for r in rows}
    assert shown == {s: table.get(s, 0) for s in shown}, (shown, table)
    assert {"DELIVERED", "FAILED", "QUEUED"} <= {s for s, n in shown.items() if n}
    assert int(text_of(browser, "total-jobs")) == sum(table.values())
    # States are words, not colours alone.
    assert "QUEUED" in browser.find_element("css selector", '#state-counts tr[data-state="QUEUED"]').text
    assert text_of(browser, "in-flight") == "0 of 2"
    assert text_of(browser, "spent-today") == "$0.09 of $0.10"
    failures = text_of(browser, "failures")
    assert stack.job("notes")["failure"]["code"] in failures and "is not an image" in failures
    assert re.fullmatch(r"\d+\.\d s", text_of(browser, "render-p50"))
    # The 30-day spend chart is drawn, with today's spend as its last bar.
    drawn = wait_until(lambda: browser.execute_script(
        "const c = Chart.getChart('spend-chart'); return c && c.data.datasets[0].data;"), what="the spend chart")
    assert len(drawn) == 30 and drawn[-1] == pytest.approx(0.09)
    browser.set_window_size(1280, 1480)  # the whole overview, chart included (the README's screenshot)
    try:
        shot(browser, screens, "overview")
    finally:
        browser.set_window_size(1280, 1000)


# --- jobs list -----------------------------------------------------------------------------------------

def test_jobs_page_lists_newest_first_and_filters_by_state_folder_date_and_name(
    stack: Stack, dashboard: str, browser: Any, screens: Path,
) -> None:
    base = base_url(dashboard)
    browser.get(base + "/jobs")
    listed = [r.get_attribute("data-job-id") for r in browser.find_elements("css selector", "#jobs-table tbody tr")]
    created = {j["job_id"]: j["created_at"] for j in stack.items()}
    # Newest first; a manifest's rows can share one creation time, in any order among themselves.
    assert sorted(listed) == sorted(created) and [created[j] for j in listed] == sorted(created.values(), reverse=True)
    shot(browser, screens, "jobs")

    def ids(query: str) -> list[str | None]:
        browser.get(base + "/jobs?" + query)
        return [r.get_attribute("data-job-id") for r in browser.find_elements("css selector", "#jobs-table tbody tr")]

    failed, delivered = stack.job("notes", status="FAILED")["job_id"], stack.job("alice")["job_id"]
    assert ids("state=FAILED") == [j["job_id"] for j in sorted(
        (j for j in stack.items() if j["status"] == "FAILED"), key=lambda j: j["created_at"], reverse=True)]
    assert ids("name=ALI") == [delivered]
    assert ids(f"folder={FOLDER}&name=note&state=FAILED")[0] == failed
    assert ids("folder=elsewhere") == [None]  # the "no job matches" row
    today = time.strftime("%Y-%m-%d", time.gmtime())
    assert len(ids(f"from={today}&to={today}")) == len(stack.items())
    assert ids("to=2000-01-01") == [None]
    # The filter form is usable from the keyboard: type a name, press Enter.
    from selenium.webdriver.common.keys import Keys

    browser.get(base + "/jobs")
    field = browser.find_element("name", "name")
    field.send_keys("wait", Keys.ENTER)
    wait_until(lambda: "name=wait" in browser.current_url, what="the search submitted by Enter")
    assert "QUEUED" in browser.find_element("id", "jobs-table").text


def test_rows_of_one_batch_are_told_apart_and_a_search_finds_what_the_list_shows(
    stack: Stack, dashboard: str, browser: Any, screens: Path,
) -> None:
    base = base_url(dashboard)

    def rows(query: str) -> dict[str, str]:
        browser.get(base + "/jobs?" + query)
        found = browser.find_elements("css selector", "#jobs-table tbody tr")
        return {r.get_attribute("data-job-id"): r.find_elements("tag name", "td")[1].text
                for r in found if r.get_attribute("data-job-id")}

    batch = {j["job_id"]: j for j in stack.items() if j.get("batch_key")}
    names = rows(f"folder={FOLDER}/show")
    assert set(names) == set(batch) and len(set(names.values())) == 2, names
    by_row = {batch[job_id]["batch_row"]: name for job_id, name in names.items()}
    assert "intro.wav" in by_row[1] and "ep1.batch.csv row 1" in by_row[1] and "-intro" in by_row[1]
    assert "outro.wav" in by_row[2] and "ep1.batch.csv row 2" in by_row[2]
    shot(browser, screens, "batch-rows")
    # Whatever part of a shown name is searched for finds it: the folder part, a file, the batch.
    bold = stack.job("b>")["job_id"]
    assert "dash/<b>bold</b>" in rows("")[bold]
    assert list(rows("name=bold")) == [bold]
    assert set(rows("name=ep1.batch")) == set(batch)
    assert [batch[j]["batch_row"] for j in rows("name=outro")] == [2]
    # `s2v jobs` tells the rows apart too (its --json carries the same names).
    listed = subprocess.run([str(S2V), "jobs", "--json", "--local"], env=stack.env, capture_output=True, text=True,
                            timeout=60, check=True)
    shown = {j["job_id"]: j["name"] for j in json.loads(listed.stdout)["jobs"]}
    assert {shown[j] for j in batch} == set(names.values())


def test_the_jobs_page_shows_a_new_job_by_itself(stack: Stack, dashboard: str, browser: Any) -> None:
    browser.get(base_url(dashboard) + "/jobs")
    browser.execute_script("window.notReloaded = true;")
    stack.drop("late", b"not an image either\n")
    row = wait_until(lambda: [r for r in browser.find_elements("css selector", "#jobs-table tbody tr")
                              if "late" in r.text], timeout=20, what="the new job's row")
    assert browser.execute_script("return window.notReloaded === true;"), "the page reloaded instead of updating"
    assert "dash/late" in row[0].text


# --- one job -------------------------------------------------------------------------------------------

def test_a_delivered_job_shows_its_timeline_inputs_cost_and_plays_its_video(
    stack: Stack, dashboard: str, browser: Any, screens: Path,
) -> None:
    job = stack.job("alice")
    browser.get(f"{base_url(dashboard)}/jobs/{job['job_id']}")
    steps = [li.text for li in browser.find_elements("css selector", "#timeline li")]
    assert [s.split()[1] for s in steps] == [h["status"] for h in job["history"]]
    assert steps[-1].split()[1] == "DELIVERED"
    record = text_of(browser, "record")
    assert job["provider_id"] in record and "$0.09" in record
    assert text_of(browser, "audio-seconds") == f"{job['audio_seconds']:.2f} s"
    # The player knows the clip's length too (not "0:00 / 0:00" beside it).
    duration = wait_until(lambda: browser.execute_script("return document.querySelector('audio').duration"),
                          what="the audio player's length")
    assert duration == pytest.approx(job["audio_seconds"], abs=0.1)
    wait_until(lambda: browser.execute_script(
        "const i = document.getElementById('portrait'); return i.complete && i.naturalWidth;"),
        what="the portrait thumbnail")
    readiness = wait_until(lambda: browser.execute_script(
        "const v = document.getElementById('video'); return v.readyState >= 1 && v.duration > 0 && "
        "[v.readyState, v.duration, v.videoWidth];"), timeout=20, what="the video's metadata")
    assert readiness[1] == pytest.approx(job["audio_seconds"], abs=0.5) and readiness[2] > 0
    shot(browser, screens, "delivered-job")


def test_a_queued_job_says_why_it_waits(stack: Stack, dashboard: str, browser: Any) -> None:
    job = stack.job("waiting")
    browser.get(f"{base_url(dashboard)}/jobs/{job['job_id']}")
    assert "QUEUED" in text_of(browser, "job-state")
    assert "DailyBudgetUSD" in text_of(browser, "queue-reason")


def test_an_input_failure_says_to_upload_a_fixed_file_and_offers_no_retry_that_would_fail_again(
    stack: Stack, dashboard: str, browser: Any, screens: Path,
) -> None:
    old = stack.job("notes", status="FAILED", attempt=0)
    browser.get(f"{base_url(dashboard)}/jobs/{old['job_id']}")
    assert text_of(browser, "failure-reason") == old["failure"]["reason"]
    assert "FAILED" in text_of(browser, "job-state")
    assert not browser.find_elements("id", "retry")
    assert "a fixed upload starts a new job by itself" in text_of(browser, "failure-next")
    # Its "portrait" is text: the page says so instead of a broken-image icon.
    assert "cannot be shown" in wait_until(lambda: browser.find_element("css selector", "p#portrait").text)
    shot(browser, screens, "failed-job")


def _retry_from_the_page(stack: Stack, dashboard: str, browser: Any, screens: Path, old: dict[str, Any]) -> None:
    from selenium.webdriver.common.keys import Keys

    browser.get(f"{base_url(dashboard)}/jobs/{old['job_id']}")
    # Keyboard only: tab to the retry button and press Enter.
    body = browser.find_element("tag name", "body")
    for _ in range(30):
        if browser.switch_to.active_element.get_attribute("id") == "retry":
            break
        body.send_keys(Keys.TAB) if _ == 0 else browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element.get_attribute("id") == "retry", "the retry button is not reachable by Tab"
    browser.switch_to.active_element.send_keys(Keys.ENTER)
    wait_until(lambda: old["job_id"] not in browser.current_url,
               what=f"the new job's page after retry: {browser.find_element('id', 'main').text[:600]}")
    new_id = browser.current_url.rstrip("/").rsplit("/", 1)[-1]
    new = stack.client("dynamodb").get_item(TableName=stack.state.table, Key={"job_id": {"S": new_id}})["Item"]
    assert deserialize_item(new)["retry_of"] == old["job_id"] and deserialize_item(new)["attempt"] == 1
    assert browser.find_element("id", "retry-of").get_attribute("href").endswith(old["job_id"])
    shot(browser, screens, "retried-job")


def test_cancel_from_the_page_stops_a_queued_job_after_a_confirmation(
    stack: Stack, dashboard: str, browser: Any, screens: Path,
) -> None:
    job = stack.job("waiting")
    browser.get(f"{base_url(dashboard)}/jobs/{job['job_id']}")
    browser.find_element("id", "cancel").click()
    prompt = browser.switch_to.alert
    assert "will not be delivered" in prompt.text
    prompt.dismiss()  # "No": nothing happens
    assert "QUEUED" in text_of(browser, "job-state") and stack.job("waiting")["status"] == "QUEUED"
    browser.find_element("id", "cancel").click()
    browser.switch_to.alert.accept()
    wait_until(lambda: "CANCELLED" in text_of(browser, "job-state"), what="the job cancelled")
    record = stack.job("waiting")
    assert record["status"] == "CANCELLED" and record["cancelled_by"].endswith("(s2v dashboard)")
    assert "cancel" in text_of(browser, "notice").lower()
    assert browser.find_elements("id", "retry") and not browser.find_elements("id", "cancel")
    shot(browser, screens, "cancelled-job")
    # A cancelled job can render: retry from the page makes the linked job.
    _retry_from_the_page(stack, dashboard, browser, screens, stack.job("waiting", status="CANCELLED"))


# --- who may use it ------------------------------------------------------------------------------------

def test_a_post_without_the_csrf_token_is_refused_and_nothing_happens(
    stack: Stack, dashboard: str, browser: Any,
) -> None:
    base = base_url(dashboard)
    job = stack.job("notes", status="FAILED", attempt=0)
    cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
    before = len(stack.items())
    refused = requests.post(f"{base}/jobs/{job['job_id']}/retry", cookies=cookies, timeout=10, allow_redirects=False)
    assert refused.status_code == 403 and "CSRF" in refused.text
    wrong = requests.post(f"{base}/jobs/{job['job_id']}/retry", cookies=cookies, data={"csrf_token": "guess"},
                          timeout=10, allow_redirects=False)
    assert wrong.status_code == 403
    # Without the access key nothing is shown at all, and another Host name is refused (no DNS rebinding).
    assert requests.get(f"{base}/jobs", timeout=10).status_code == 403
    rebound = requests.get(f"{base}/jobs", cookies=cookies, headers={"Host": "evil.example"}, timeout=10)
    assert rebound.status_code == 403
    time.sleep(1.5)  # a retry would have created its job by now
    assert len(stack.items()) == before


def test_a_non_ascii_key_cookie_or_csrf_token_is_refused_with_403(stack: Stack, dashboard: str, browser: Any) -> None:
    base = base_url(dashboard)
    job = stack.job("waiting")
    cookies = {c["name"]: c["value"] for c in browser.get_cookies()}
    assert requests.get(f"{base}/?key=\u00e9t\u00e9", timeout=10).status_code == 403
    assert requests.get(f"{base}/jobs", headers={"Cookie": "s2v_dashboard=\u00e9t\u00e9".encode("latin-1")},
                        timeout=10).status_code == 403
    post = requests.post(f"{base}/jobs/{job['job_id']}/cancel", cookies=cookies,
                         data={"csrf_token": "\u00e9\u4e2d"}, timeout=10, allow_redirects=False)
    assert post.status_code == 403


def test_a_refused_visit_gets_a_styled_page_that_says_how_to_get_in_and_stays_put(
    dashboard: str, browser: Any, screens: Path,
) -> None:
    base = base_url(dashboard)
    kept = browser.get_cookies()
    browser.delete_all_cookies()
    try:
        browser.get(base + "/jobs")
        assert "403" in browser.find_element("tag name", "h1").text
        assert "s2v dashboard" in browser.find_element("id", "main").text
        # Styled: its stylesheet loads (it holds no data); no live refresh, no link to another refused page.
        assert browser.execute_script("return document.styleSheets[0].cssRules.length") > 0
        header = "return getComputedStyle(document.querySelector('header.top')).borderBottomStyle"
        assert browser.execute_script(header) == "solid"
        assert not browser.find_elements("css selector", "[data-live]") and not browser.find_elements("id", "live-note")
        assert not browser.find_elements("css selector", "main a")
        shot(browser, screens, "refused")
    finally:
        for cookie in kept:
            browser.add_cookie(cookie)
