"""From S3 keys to pairs. Pure: no I/O.

``inputs/a/b/alice.png`` → folder ``a/b``, stem ``alice``, kind ``image``. A pair is exactly one
image and one audio with the same folder and stem; ``alice.json`` is its optional params sidecar.
A set may also hold ``alice.mask.png`` (a mask image, kind ``mask``), and a two-speaker set has
``alice.left.<audio>`` and ``alice.right.<audio>`` (kinds ``left`` and ``right``) instead of one
audio: a speaker track is never taken for a pair's audio, so ``alice.png`` + ``alice.left.wav``
waits for ``alice.right.wav`` whatever order the files arrive in.
"""

from __future__ import annotations

import posixpath
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import unquote_plus

from s2v.model.jobs import InputObject, Job
from s2v.model.longform import segment_output_base
from s2v.model.naming import output_base as safe_base

IMAGE_EXTENSIONS = frozenset({"png", "jpg", "jpeg", "webp"})
AUDIO_EXTENSIONS = frozenset({"wav", "mp3", "m4a", "aac", "ogg", "flac"})
SIDECAR_EXTENSION = "json"
# "<stem>.<marker>.<ext>": a file with a role in <stem>'s set (image markers, audio markers).
IMAGE_MARKERS = {"mask": "mask"}
AUDIO_MARKERS = {"left": "left", "right": "right"}
MANIFEST_SUFFIXES = (".batch.json", ".batch.csv")  # a batch manifest (model/manifest.py)
DEFAULTS_NAME = "_defaults.json"  # a folder's params for everything below it; never an input itself


@dataclass(frozen=True)
class InputRef:
    key: str
    folder: str  # "" for files directly under the input prefix
    stem: str
    kind: str  # image | audio | sidecar | manifest | mask | left | right
    extension: str

    @property
    def stem_prefix(self) -> str:
        """The listing prefix that finds every candidate partner (and a few false friends)."""
        return posixpath.join(*(p for p in (self.folder, self.stem) if p)) + "."


def decode_event_key(raw: str) -> str:
    """S3 event keys are URL-encoded with '+' for space."""
    return unquote_plus(raw)


def parse_key(key: str, input_prefix: str) -> InputRef | None:
    """The input a key names, or None for anything the pipeline must ignore (outputs,
    folder placeholders, hidden files, unknown extensions)."""
    if not key.startswith(input_prefix) or key.endswith("/"):
        return None
    relative = key[len(input_prefix):]
    folder, name = posixpath.split(relative)
    if not name or name.startswith(".") or name.lower() == DEFAULTS_NAME:
        return None
    stem, dot, extension = name.rpartition(".")
    if not dot or not stem:
        return None
    extension = extension.lower()
    if name.lower().endswith(MANIFEST_SUFFIXES) and stem.lower() != "batch":
        return InputRef(key=key, folder=folder, stem=stem, kind="manifest", extension=extension)
    base, marked, marker = stem.rpartition(".")
    if extension in IMAGE_EXTENSIONS:
        kind = "image"
        if marked and base and marker.lower() in IMAGE_MARKERS:
            stem, kind = base, IMAGE_MARKERS[marker.lower()]
    elif extension in AUDIO_EXTENSIONS:
        kind = "audio"
        if marked and base and marker.lower() in AUDIO_MARKERS:
            stem, kind = base, AUDIO_MARKERS[marker.lower()]
    elif extension == SIDECAR_EXTENSION:
        kind = "sidecar"
    else:
        return None
    return InputRef(key=key, folder=folder, stem=stem, kind=kind, extension=extension)


@dataclass(frozen=True)
class ListedObject:
    key: str
    etag: str
    size: int
    version_id: str = ""

    def as_input(self) -> InputObject:
        return InputObject(key=self.key, etag=self.etag.strip('"'), size=self.size, version_id=self.version_id)


@dataclass(frozen=True)
class Pair:
    """A complete set: one image and one audio, or one image and two speaker tracks (``audio`` is
    None then); ``extras`` holds the files with other roles (mask, left, right) by role."""

    folder: str
    stem: str
    image: ListedObject
    audio: ListedObject | None
    sidecar: ListedObject | None
    extras: Mapping[str, ListedObject] = field(default_factory=dict)

    @property
    def roles(self) -> frozenset[str]:
        return frozenset({"image", *(["audio"] if self.audio else []), *self.extras})


@dataclass(frozen=True)
class Incomplete:
    missing: str  # "image", "audio", or the role of a missing speaker track ("left" / "right")
    present: tuple[ListedObject, ...] = field(default=(), compare=False)  # the set's files so far


@dataclass(frozen=True)
class Ambiguous:
    folder: str
    stem: str
    objects: tuple[ListedObject, ...]
    reason: str


def nfc(text: str) -> str:
    """Names are compared in NFC: macOS uploads decomposed (NFD) names, most systems composed."""
    return unicodedata.normalize("NFC", text)


def listing_prefixes(ref: InputRef, input_prefix: str) -> tuple[str, ...]:
    """Every prefix under which a partner of ``ref`` may be stored (both normalisation forms)."""
    raw = input_prefix + ref.stem_prefix
    return tuple(dict.fromkeys((raw, nfc(raw), unicodedata.normalize("NFD", raw))))


KIND_NAMES = {"image": "image", "audio": "audio", "sidecar": "params (.json)", "mask": "mask image (.mask.*)",
              "left": "left speaker track (.left.*)", "right": "right speaker track (.right.*)"}


def match(ref: InputRef, listing: list[ListedObject], input_prefix: str) -> Pair | Incomplete | Ambiguous:
    """Decide what the objects sharing ``ref``'s folder and stem make."""
    folder, stem = nfc(ref.folder), nfc(ref.stem)
    by_kind: dict[str, list[ListedObject]] = {kind: [] for kind in KIND_NAMES}
    for obj in {o.key: o for o in listing}.values():
        other = parse_key(obj.key, input_prefix)
        if other and nfc(other.folder) == folder and nfc(other.stem) == stem:
            by_kind[other.kind].append(obj)
    found = {kind: sorted(objs, key=lambda o: o.key) for kind, objs in by_kind.items()}
    for kind, objs in found.items():
        if len(objs) > 1:
            names = ", ".join(posixpath.basename(o.key) for o in objs)
            return Ambiguous(
                folder=folder,
                stem=stem,
                objects=tuple(o for objs in found.values() for o in objs),
                reason=(
                    f"found {len(objs)} {KIND_NAMES[kind]} files for '{stem}' ({names}); keep exactly one "
                    f"{KIND_NAMES[kind]} file per name: rename or move the extra ones, then upload the pair again"
                ),
            )
    tracks = [kind for kind in ("left", "right") if found[kind]]
    if found["audio"] and tracks:
        names = ", ".join(posixpath.basename(o.key) for kind in ("audio", *tracks) for o in found[kind])
        return Ambiguous(
            folder=folder, stem=stem, objects=tuple(o for objs in found.values() for o in objs),
            reason=(f"'{stem}' has both a single audio and speaker tracks ({names}): a set is either one "
                    f"audio ({stem}.wav) or two speaker tracks ({stem}.left.wav and {stem}.right.wav); "
                    "rename or move the extra file, then upload the set again"))
    present = tuple(o for objs in found.values() for o in objs)
    if not found["image"]:
        return Incomplete(missing="image", present=present)
    if len(tracks) == 1:
        return Incomplete(missing="right" if tracks == ["left"] else "left", present=present)
    if not found["audio"] and not tracks:
        return Incomplete(missing="audio", present=present)
    sidecar = found["sidecar"][0] if found["sidecar"] else None
    extras = {kind: found[kind][0] for kind in ("mask", "left", "right") if found[kind]}
    return Pair(folder=folder, stem=stem, image=found["image"][0],
                audio=found["audio"][0] if found["audio"] else None, sidecar=sidecar, extras=extras)


def output_base(folder: str, stem: str, output_prefix: str) -> str:
    """``outputs/a/b/alice`` for folder ``a/b`` and stem ``alice``: add ``.mp4``/``.json``.
    Always under ``output_prefix`` and within S3's key length (``s2v.model.naming``)."""
    return safe_base(folder, stem, output_prefix)


def job_output_base(job: Job, output_prefix: str, work_prefix: str) -> str:
    """Where a job's video, report or error report goes: its rendered ``output_name``, else its stem,
    under ``output_prefix``; a long talk's segment renders into the private work prefix instead (its
    parent stitches them into outputs/)."""
    if job.is_segment:
        return segment_output_base(work_prefix, job)
    return output_base(job.folder, job.output_name or job.stem, output_prefix)
