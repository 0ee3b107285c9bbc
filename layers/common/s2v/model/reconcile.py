"""Settling an ambiguous submit from the provider's task list. Pure: no I/O.

A submit whose answer was lost (timeout, dropped connection, a 5xx after acceptance) may or may
not have created a task, and may be charged. Before the POST the job records a fingerprint of what
it sends: SHA-256 digests of every input URL of the request, by the model's request field
(``image`` and ``audio``; ``mask_image``; ``left_audio`` and ``right_audio``: the model table's
``fields``), the model, and when the POST started and ended. Presigned URLs (or the provider's own
upload URLs) are secret-bearing, so only their digests are kept. The provider's list (newest
first, past 7 days) is then compared with it, as exactly as the list allows:

- an item whose input shows every one of those fields, each hashing to the recorded digest, is
  this job's task: matched by ``input urls``. Every field counts: one URL alone is not proof (the
  segment jobs of a long talk share the image, and two presigned in the same second are the same URL);
- an item showing any of those fields with another URL on the host this job sent it to is not
  this job's task; another URL on another host (the provider re-hosted or rewrote it) cannot be
  compared, and that field counts as not shown: a charged task is never called "not ours" for it;
- an item showing none of them (the list need not return inputs), or only some, each ours, is a
  candidate when its model is ours and
  it was created within the submit window ``[sent_at - skew, max(sent_until, sent_at + timeout) + skew]``;
  the one candidate no other job holds is taken, matched by ``model and time window``, but only
  when the list was read back past the window's start; two or more: cannot tell;
- no candidate at all, and the list was read back past the window's start: the provider never
  took the job, so it was not charged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from s2v.model.models import AUDIO_ROLES, CATALOG
from s2v.model.provider_facts import RETENTION_SECONDS

MATCH_INPUT_URLS = "input urls"
MATCH_TIME_WINDOW = "model and time window"
# Our clock against the provider's: both NTP-synced; a minute of slack on each side of the window.
CLOCK_SKEW_SECONDS = 60.0
# The list must still reach the window's start: keep an hour clear of the 7-day edge.
RETENTION_MARGIN_SECONDS = 3600.0

FOUND, ABSENT, UNKNOWN = "found", "absent", "unknown"


def url_digest(url: str) -> str:
    """What a job keeps of an input URL it sent: enough to recognise it, nothing to reuse it."""
    return hashlib.sha256(url.encode()).hexdigest()


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Fingerprint:
    model: str  # the provider's model path
    inputs: Mapping[str, str]  # request field -> url_digest of the URL sent in it
    sent_at: float
    sent_until: float = 0.0
    hosts: Mapping[str, str] = field(default_factory=dict)  # request field -> host of its URL (not secret)


def input_digests(body: Mapping[str, Any], fields: Iterable[str]) -> dict[str, str]:
    """What a job records of a request body before sending it: the digest of each input URL field."""
    return {name: url_digest(body[name]) for name in fields if isinstance(body.get(name), str) and body[name]}


def input_hosts(body: Mapping[str, Any], fields: Iterable[str]) -> dict[str, str]:
    """The host of each input URL field (no secret in it): what a listed URL is compared on."""
    return {name: urlsplit(body[name]).netloc.lower() for name in fields
            if isinstance(body.get(name), str) and body[name]}


def carries_inputs(recorded: Mapping[str, str], task_input: Mapping[str, Any]) -> bool:
    """Whether a task's input shows every recorded field with the very URL this job sent in it:
    the only proof that lets a callback attach a task to a job that has no provider id yet."""
    return bool(recorded) and all(
        isinstance(url := task_input.get(name), str) and url_digest(url) == digest for name, digest in recorded.items())


def recorded_inputs(model_path: str, image_sha256: str, audio_sha256: str) -> dict[str, str]:
    """The fingerprint of a job recorded before every input field was kept (only the image's and the
    first audio track's digests), under the model's field names."""
    model = CATALOG.by_path(model_path) or CATALOG.models[0]
    first_audio = next(role for role in AUDIO_ROLES if role in model.roles)
    kept = {model.field_for("image"): image_sha256, model.field_for(first_audio): audio_sha256}
    return {name: digest for name, digest in kept.items() if digest}


@dataclass(frozen=True)
class Window:
    start: float
    end: float

    def holds(self, ts: float) -> bool:
        return self.start <= ts <= self.end

    def __str__(self) -> str:
        return f"{iso(self.start)} .. {iso(self.end)}"


def submit_window(fp: Fingerprint, *, timeout: float, skew: float = CLOCK_SKEW_SECONDS) -> Window:
    """When the provider can have created the task: from the POST's start to when our client
    gave up on it (or could have, at the latest), with clock skew on both sides."""
    end = max(fp.sent_until, fp.sent_at + timeout)
    return Window(fp.sent_at - skew, end + skew)


def list_reaches(window: Window, now: float) -> bool:
    """Whether the 7-day list can still show a task created at the window's start."""
    return now - window.start < RETENTION_SECONDS - RETENTION_MARGIN_SECONDS


@dataclass(frozen=True)
class Listed:
    """What matching needs of one list item."""

    id: str
    model: str
    created_at: float | None
    input: Mapping[str, Any]


@dataclass
class Sorting:
    """List items sorted by what they say about the job, accumulated page by page."""

    exact: list[str]
    weak: list[str]
    read: int = 0
    oldest: float | None = None

    @classmethod
    def empty(cls) -> Sorting:
        return cls(exact=[], weak=[])

    def add(self, fp: Fingerprint, items: Iterable[Listed], window: Window) -> None:
        for item in items:
            self.read += 1
            if item.created_at is not None:
                self.oldest = item.created_at if self.oldest is None else min(self.oldest, item.created_at)
            if item.id in self.exact or item.id in self.weak:
                continue  # the same task on two pages (the list moved while we read it)
            kind = classify(fp, item, window)
            if kind == MATCH_INPUT_URLS:
                self.exact.append(item.id)
            elif kind == MATCH_TIME_WINDOW:
                self.weak.append(item.id)

    def candidates(self) -> list[str]:
        return [*self.exact, *self.weak]


def classify(fp: Fingerprint, item: Listed, window: Window) -> str:
    """``input urls`` (this job's task), ``model and time window`` (could be), or "" (not ours)."""
    shown = {name: url for name in fp.inputs if isinstance(url := item.input.get(name), str) and url}
    for name, url in list(shown.items()):
        if url_digest(url) == fp.inputs[name]:
            continue
        sent_to = fp.hosts.get(name)
        if not sent_to or urlsplit(url).netloc.lower() == sent_to:
            return ""  # it was sent another URL in one of this job's fields
        del shown[name]  # shown on another host than ours: re-hosted by the provider, cannot compare
    if fp.inputs and len(shown) == len(fp.inputs):
        return MATCH_INPUT_URLS
    # Fewer fields shown than sent (none: the list gave no inputs): it could be, no more.
    if item.model and fp.model and item.model != fp.model:
        return ""
    if item.created_at is not None and not window.holds(item.created_at):
        return ""
    return MATCH_TIME_WINDOW  # not all inputs to compare, and nothing rules it out


def covers(*, window: Window, oldest: float | None, page_items: int, page_size: int, page: int,
           total: int | None) -> bool:
    """Whether the pages read so far (newest first) hold every task created since the window's start:
    the last page was reached, or an item older than the window's start was seen."""
    if oldest is not None and oldest < window.start:
        return True
    if page_items < page_size:
        return True
    return total is not None and page * page_size >= total


@dataclass(frozen=True)
class Verdict:
    outcome: str  # found | absent | unknown
    provider_id: str = ""
    matched_by: str = ""
    evidence: str = ""


def judge(job_id: str, sorting: Sorting, *, covered: bool, held: Mapping[str, str], window: Window,
          model: str) -> Verdict:
    """The verdict on the items read. ``held`` maps a candidate task id to the job that holds it."""
    if len(sorting.exact) == 1:
        task = sorting.exact[0]
        owner = held.get(task, job_id)
        if owner != job_id:
            return Verdict(UNKNOWN, evidence=f"task {task} carries this job's input URLs but job {owner} holds it")
        return Verdict(FOUND, task, MATCH_INPUT_URLS, f"task {task} carries this job's input URLs")
    if len(sorting.exact) > 1:
        return Verdict(UNKNOWN, evidence=f"{len(sorting.exact)} tasks carry this job's input URLs: "
                                         f"{', '.join(sorting.exact)}")
    free = [task for task in sorting.weak if held.get(task, job_id) == job_id]
    taken = len(sorting.weak) - len(free)
    others = f" ({taken} more held by other jobs)" if taken else ""
    if not covered:
        return Verdict(UNKNOWN, evidence=f"the provider's list was read for {sorting.read} task(s) without "
                                         f"reaching the submit window's start ({window})")
    if len(free) == 1:
        return Verdict(FOUND, free[0], MATCH_TIME_WINDOW,
                       f"task {free[0]} is the only {model} task created in the submit window {window} whose "
                       f"inputs the list does not fully show{others}")
    if free:
        return Verdict(UNKNOWN, evidence=f"{len(free)} {model} tasks were created in the submit window {window} "
                                         f"and the list does not show their inputs to tell them apart: "
                                         f"{', '.join(free)}")
    return Verdict(ABSENT, evidence=f"the provider's list ({sorting.read} task(s) read back past {iso(window.start)}) "
                                    f"has no task for this job's inputs and no unclaimed {model} task created in "
                                    f"the submit window {window}{others}")
