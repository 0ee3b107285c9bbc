"""Keys → pairs: URL decoding, folders, stems, kinds, and what is ignored."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2v.model.pairing import Ambiguous, Incomplete, ListedObject, Pair, decode_event_key, match, output_base, parse_key

P = "inputs/"


@pytest.mark.parametrize(("raw", "decoded"), [
    ("inputs/talks/alice+smith.png", "inputs/talks/alice smith.png"),
    ("inputs/talks/caf%C3%A9.wav", "inputs/talks/café.wav"),
    ("inputs/a%2Bb.png", "inputs/a+b.png"),
    ("inputs/%E4%BD%A0%E5%A5%BD.mp3", "inputs/你好.mp3"),
])
def test_event_keys_are_url_decoded_with_plus_as_space(raw: str, decoded: str) -> None:
    assert decode_event_key(raw) == decoded


@pytest.mark.parametrize(("key", "folder", "stem", "kind"), [
    ("inputs/alice.png", "", "alice", "image"),
    ("inputs/talks/alice.JPG", "talks", "alice", "image"),
    ("inputs/a/b/c/d/e/alice.webp", "a/b/c/d/e", "alice", "image"),
    ("inputs/talks/alice.v2.wav", "talks", "alice.v2", "audio"),
    ("inputs/talks/alice smith.m4a", "talks", "alice smith", "audio"),
    ("inputs/talks/alice.json", "talks", "alice", "sidecar"),
])
def test_input_keys_parse_into_folder_stem_and_kind(key: str, folder: str, stem: str, kind: str) -> None:
    ref = parse_key(key, P)
    assert ref is not None
    assert (ref.folder, ref.stem, ref.kind) == (folder, stem, kind)


@pytest.mark.parametrize("key", [
    "outputs/talks/alice.mp4", "outputs/talks/alice.png", "inputs/talks/", "inputs/talks/.DS_Store",
    "inputs/talks/notes.txt", "inputs/talks/alice", "inputs/.png", "other/alice.png", "inputs/talks/alice.mp4",
])
def test_non_inputs_and_the_pipelines_own_outputs_are_ignored(key: str) -> None:
    assert parse_key(key, P) is None


def _listed(*keys: str) -> list[ListedObject]:
    return [ListedObject(key=k, etag=f"etag-{i}", size=10) for i, k in enumerate(keys)]


def test_an_image_and_an_audio_with_the_same_stem_make_a_pair_with_its_sidecar() -> None:
    ref = parse_key("inputs/talks/alice.png", P)
    assert ref
    found = match(ref, _listed("inputs/talks/alice.png", "inputs/talks/alice.wav", "inputs/talks/alice.json",
                               "inputs/talks/alice.v2.wav"), P)
    assert isinstance(found, Pair)
    assert (found.image.key, found.audio.key) == ("inputs/talks/alice.png", "inputs/talks/alice.wav")
    assert found.sidecar and found.sidecar.key == "inputs/talks/alice.json"


def test_half_a_pair_waits_for_the_other_half() -> None:
    ref = parse_key("inputs/talks/alice.png", P)
    assert ref
    assert match(ref, _listed("inputs/talks/alice.png", "inputs/talks/alice.json"), P) == Incomplete("audio")


def test_two_images_for_one_stem_are_ambiguous_and_named() -> None:
    ref = parse_key("inputs/talks/alice.wav", P)
    assert ref
    found = match(ref, _listed("inputs/talks/alice.png", "inputs/talks/alice.jpg", "inputs/talks/alice.wav"), P)
    assert isinstance(found, Ambiguous)
    assert "alice.jpg" in found.reason and "alice.png" in found.reason and "2 image" in found.reason


def test_unicode_stems_pair_across_normalisation_forms() -> None:
    nfc, nfd = "inputs/caf\u00e9.png", "inputs/cafe\u0301.wav"
    ref = parse_key(nfc, P)
    assert ref
    assert isinstance(match(ref, _listed(nfc, nfd), P), Pair)


def test_outputs_mirror_the_input_folder_and_stem() -> None:
    assert output_base("a/b", "alice", "outputs/") == "outputs/a/b/alice"
    assert output_base("", "alice", "outputs/") == "outputs/alice"


names = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/."), min_size=1,
                max_size=20)


@given(folder=st.lists(names, max_size=4), stem=names, image=st.sampled_from(["png", "jpg", "webp"]),
       audio=st.sampled_from(["wav", "mp3", "flac", "ogg", "m4a", "aac"]))
def test_any_folder_and_stem_round_trip_and_pair(folder: list[str], stem: str, image: str, audio: str) -> None:
    prefix = "/".join([*folder, ""])
    image_key, audio_key = f"inputs/{prefix}{stem}.{image}", f"inputs/{prefix}{stem}.{audio}"
    ref = parse_key(image_key, P)
    assert ref is not None and ref.stem == stem and ref.folder == "/".join(folder)
    found = match(ref, _listed(image_key, audio_key), P)
    assert isinstance(found, Pair)
    assert output_base(ref.folder, ref.stem, "outputs/").endswith(stem)
