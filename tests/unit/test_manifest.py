"""Manifests, parsed: rows and their keys, whole-manifest refusals, and no row key that leaves inputs/."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2v.model.errors import InputError
from s2v.model.manifest import ManifestError, batch_id_for, parse_manifest, row_key

KEY = "inputs/show/ep1.batch.csv"


def parse(body: str | bytes, key: str = KEY, max_rows: int = 100) -> list:
    raw = body.encode() if isinstance(body, str) else body
    return list(parse_manifest(raw, key, input_prefix="inputs/", max_rows=max_rows, max_prompt_chars=50).rows)


def test_csv_rows_resolve_keys_against_the_manifest_folder_or_the_bucket_root() -> None:
    rows = parse("image,audio,prompt,seed\n_media/a.png,_media/a.wav,hello,42\n/inputs/x/b.jpg,c.mp3,,\n")
    assert [(r.image_key, r.audio_key) for r in rows] == [
        ("inputs/show/_media/a.png", "inputs/show/_media/a.wav"), ("inputs/x/b.jpg", "inputs/show/c.mp3")]
    assert rows[0].params == {"prompt": "hello", "seed": "42"} and not rows[0].from_json  # CSV cells are text
    assert rows[1].params == {} and rows[0].error is None and rows[1].stem == "b"


def test_json_rows_keep_their_types_and_bad_values_fail_only_their_row() -> None:
    body = json.dumps({"rows": [{"image": "a.png", "audio": "a.wav", "seed": 1},
                                {"image": "a.png", "audio": "a.wav", "seed": "1"},
                                {"image": "a.png", "audio": "a.wav", "prompt": "x" * 51}]})
    rows = parse(body, "inputs/ep.batch.json")
    assert rows[0].error is None and rows[0].image_key == "inputs/a.png"
    assert rows[1].error is not None and rows[1].error.code == "invalid_seed"
    assert "inputs/ep.batch.json row 2: seed must be a number without quotes" in rows[1].error.reason
    assert rows[2].error is not None and rows[2].error.code == "prompt_too_long"


def test_an_exact_repeat_is_a_duplicate_row_but_different_params_are_two_rows() -> None:
    rows = parse("image,audio,seed\na.png,a.wav,1\na.png,a.wav,2\na.png,a.wav,1\n")
    assert [r.error.code if r.error else None for r in rows] == [None, None, "duplicate_row"]
    assert rows[2].error is not None and "repeats row 1" in rows[2].error.reason


@pytest.mark.parametrize(("body", "code", "words"), [
    ("image,audio,fps\na.png,a.wav,25\n", "unknown_columns", "'fps'"),
    ("image,audio\n", "empty_manifest", "has no rows"),
    ("image,prompt\na.png,x\n", "missing_columns", "no audio column"),
    ('image,audio\n"a.png,a.wav\n', "invalid_manifest", "not valid CSV"),
    ("image,audio\n" + "a.png,a.wav\n" * 4, "too_many_rows", "has 4 rows; the limit is 3"),
])
def test_manifests_that_cannot_be_used_whole_are_refused_with_a_reason(body: str, code: str, words: str) -> None:
    with pytest.raises(ManifestError) as raised:
        parse(body, max_rows=3)
    assert raised.value.code == code and words in raised.value.reason and KEY in raised.value.reason


@pytest.mark.parametrize("value", [
    "../../etc/a.png", "/outputs/a.png", "/a.png", "a/./b.png", "a//b.png", "..", "a\x00.png", "a\n.png",
    "/inputs/../outputs/a.png", "x" * 1030 + ".png", "/" + "inputs/" + "y" * 1020 + ".png", "a.txt", "",
])
def test_no_row_key_escapes_inputs(value: str) -> None:
    with pytest.raises(InputError) as raised:
        row_key(value, "image", "show", "inputs/", "row 1")
    assert raised.value.code == "invalid_row"


@given(st.text(max_size=1100))
def test_any_accepted_row_key_is_a_plain_key_under_inputs(value: str) -> None:
    try:
        key = row_key(value + ".png", "image", "show", "inputs/", "row 1")
    except InputError:
        return
    assert key.startswith("inputs/") and len(key.encode()) <= 1024
    assert all(part not in ("", ".", "..") for part in key.split("/"))
    assert not any(ord(ch) < 32 for ch in key)


def test_the_batch_is_the_manifest_key_and_bytes() -> None:
    assert batch_id_for(KEY, b"a") == batch_id_for(KEY, b"a")
    assert len({batch_id_for(KEY, b"a"), batch_id_for(KEY, b"b"), batch_id_for("inputs/other.batch.csv", b"a")}) == 3
