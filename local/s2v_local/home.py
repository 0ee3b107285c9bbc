"""Where a checkout's local stack keeps its state file and its data: with the checkout.

Every clone on a machine has its own: ``<checkout>/.s2v/local.json`` (the running stack's state
file, read by ``s2v``) and ``<checkout>/.s2v/local-data/`` (the jobs and objects kept between
runs, ``snapshot``). ``$S2V_LOCAL_HOME`` moves both; ``$S2V_LOCAL_STATE`` / ``$S2V_LOCAL_DATA``
move one each (the data then sits beside the state file unless named). A data folder is claimed
by one stack at a time (an OS lock held while it runs), so two stacks never write one folder.
The stack's name, and so its bucket's and table's, is derived from the home folder: stable
between runs of one checkout, different between checkouts.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

HOME_ENV = "S2V_LOCAL_HOME"
STATE_ENV = "S2V_LOCAL_STATE"
DATA_ENV = "S2V_LOCAL_DATA"
CHECKOUT = Path(__file__).resolve().parents[2]
STACK_PREFIX = "s2v-local"


def home() -> Path:
    if os.environ.get(HOME_ENV):
        return Path(os.environ[HOME_ENV]).expanduser().resolve()
    if (CHECKOUT / "template.yaml").is_file():
        return CHECKOUT / ".s2v"
    # Installed outside a checkout: one folder per install, under the user's cache.
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "s2v" / hashlib.sha256(str(CHECKOUT).encode()).hexdigest()[:12]


def state_path() -> Path:
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV]).expanduser()
    return home() / "local.json"


def data_dir() -> Path:
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    if os.environ.get(STATE_ENV) and not os.environ.get(HOME_ENV):
        return state_path().parent / "local-data"
    return home() / "local-data"


def stack_name() -> str:
    """``s2v-local-<6 hex>``, the same for every run of this checkout (or home), so the bucket's
    name a user's scripts hold stays valid."""
    digest = hashlib.sha256(str(data_dir().resolve()).encode()).hexdigest()[:6]
    return f"{STACK_PREFIX}-{digest}"


class DataInUse(Exception):
    """Another stack holds the data folder; the message names it and what to do."""


@dataclass
class Claim:
    """A data folder held by this process until ``release``."""

    folder: Path
    _file: IO[str]

    def note(self, **facts: Any) -> None:
        """Tell whoever finds the folder busy who holds it (process, endpoint)."""
        self._file.seek(0)
        self._file.truncate()
        self._file.write(json.dumps({"pid": os.getpid(), **facts}))
        self._file.flush()

    def release(self) -> None:
        if not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()


def lock_path(folder: Path) -> Path:
    return folder.with_name(f".{folder.name}.lock")


def claim(folder: Path) -> Claim:
    """Hold ``folder`` for this stack, or raise ``DataInUse`` naming the stack that holds it."""
    path = lock_path(folder)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = holder_of(handle.read())
        handle.close()
        raise DataInUse(f"another local stack is running on {folder} ({holder}): stop it with `s2v local down` "
                        f"(or Ctrl-C where it runs), or set {HOME_ENV} to a folder of its own to run a second "
                        "one") from None
    claimed = Claim(folder, handle)
    claimed.note()
    return claimed


def holder_of(text: str) -> str:
    try:
        facts = json.loads(text)
    except ValueError:
        return "process unknown"
    where = f", {facts['endpoint_url']}" if facts.get("endpoint_url") else ""
    return f"process {facts.get('pid', '?')}{where}"
