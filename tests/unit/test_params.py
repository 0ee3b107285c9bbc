"""Params: sidecar over S3 metadata over defaults, and a precise reason for every bad value."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2v.model.errors import InputError
from s2v.model.params import SEED_MAX, Params, resolve_params

KEY = "inputs/talks/alice.json"
DEFAULTS = Params(prompt="a person talking", resolution="480p", seed=-1)
LIMIT = 2000


def resolve(sidecar: bytes | dict[str, Any] | None = None, metadata: dict[str, str] | None = None) -> Params:
    raw = json.dumps(sidecar).encode() if isinstance(sidecar, dict) else sidecar
    return resolve_params(raw, metadata or {}, defaults=DEFAULTS, max_prompt_chars=LIMIT, sidecar_key=KEY)


# --- precedence ----------------------------------------------------------------------------


def test_without_sidecar_or_metadata_the_defaults_apply() -> None:
    assert resolve() == DEFAULTS


def test_metadata_overrides_defaults_per_field() -> None:
    assert resolve(metadata={"seed": "42"}) == Params(prompt="a person talking", resolution="480p", seed=42)


def test_sidecar_overrides_metadata_which_overrides_defaults_per_field() -> None:
    params = resolve({"prompt": "from the file"}, {"prompt": "from metadata", "resolution": "720p"})
    assert params == Params(prompt="from the file", resolution="720p", seed=-1)


def test_every_field_from_the_sidecar() -> None:
    params = resolve({"prompt": "smile", "resolution": "720p", "seed": 7}, {"seed": "1", "resolution": "480p"})
    assert params == Params(prompt="smile", resolution="720p", seed=7)


def test_a_sidecar_value_fixes_a_bad_metadata_value_it_overrides() -> None:
    assert resolve({"seed": 5}, {"seed": "not a number"}).seed == 5


def test_other_metadata_keys_are_ignored() -> None:
    assert resolve(metadata={"s2v-job-id": "abc", "mtime": "1700000000.1"}) == DEFAULTS


def test_an_empty_prompt_is_a_valid_choice() -> None:
    assert resolve({"prompt": ""}).prompt == ""
    assert resolve(metadata={"prompt": ""}).prompt == ""


@pytest.mark.parametrize("value", ["720p", "720P", " 720p "])
def test_resolution_ignores_case_and_surrounding_space(value: str) -> None:
    assert resolve({"resolution": value}).resolution == "720p"
    assert resolve(metadata={"resolution": value}).resolution == "720p"


@pytest.mark.parametrize("seed", [-1, 0, 1, SEED_MAX])
def test_seeds_at_the_bounds_are_accepted(seed: int) -> None:
    assert resolve({"seed": seed}).seed == seed
    assert resolve(metadata={"seed": str(seed)}).seed == seed


def test_a_utf8_bom_and_unicode_prompt_are_fine() -> None:
    raw = b"\xef\xbb\xbf" + json.dumps({"prompt": "sourire, 你好"}, ensure_ascii=False).encode()
    assert resolve(raw).prompt == "sourire, 你好"


def test_the_prompt_limit_is_inclusive() -> None:
    assert len(resolve({"prompt": "x" * LIMIT}).prompt) == LIMIT


# --- errors --------------------------------------------------------------------------------

META = "S3 object metadata x-amz-meta-"

# (id, sidecar, metadata, code, fragments the reason must contain)
ERRORS: list[tuple[str, bytes | dict[str, Any] | None, dict[str, str] | None, str, tuple[str, ...]]] = [
    ("broken-json", b'{"prompt": "hi"', None, "invalid_json", (KEY, "not valid JSON", "line 1, column 16")),
    ("trailing-comma", b'{\n  "seed": 1,\n}', None, "invalid_json", ("line 3, column 1",)),
    ("single-quotes", b"{'seed': 1}", None, "invalid_json", ("line 1, column 2",)),
    ("empty-file", b"", None, "invalid_json", (KEY, "is empty", "delete the file")),
    ("blank-file", b"  \n", None, "invalid_json", ("is empty",)),
    ("not-utf8", b'{"prompt": "caf\xe9"}', None, "invalid_json", ("not UTF-8", "offset 15")),
    ("nan", b'{"seed": NaN}', None, "invalid_json", ("NaN",)),
    ("duplicate-key", b'{"seed": 1, "seed": 2}', None, "invalid_json", ("'seed' more than once",)),
    ("a-list", b"[1, 2]", None, "not_a_json_object", (KEY, "JSON object", "holds a list")),
    ("a-string", b'"720p"', None, "not_a_json_object", ('the text "720p"',)),
    ("null", b"null", None, "not_a_json_object", ("holds null",)),
    ("unknown-keys", {"resoluton": "720p", "colour": "red", "seed": 1}, None, "unknown_params",
     ("'colour'", "'resoluton' (did you mean 'resolution'?)",
      "allowed keys are prompt, resolution, seed, model, order, segment_seconds and output_name")),
    ("bad-resolution", {"resolution": "1080p"}, None, "invalid_resolution", (KEY, '"480p" or "720p"', '"1080p"')),
    ("numeric-resolution", {"resolution": 720}, None, "invalid_resolution", ("not 720",)),
    ("quoted-seed", {"seed": "42"}, None, "invalid_seed", ("without quotes", '"42"')),
    ("fractional-seed", {"seed": 4.5}, None, "invalid_seed", ("whole number", "not 4.5")),
    ("boolean-seed", {"seed": True}, None, "invalid_seed", ("not true",)),
    ("null-seed", {"seed": None}, None, "invalid_seed", ("not null",)),
    ("seed-below-range", {"seed": -2}, None, "invalid_seed", ("seed -2 is out of range", "-1 (random) to 2147483647")),
    ("seed-above-range", {"seed": SEED_MAX + 1}, None, "invalid_seed", ("2147483648 is out of range",)),
    ("numeric-prompt", {"prompt": 42}, None, "invalid_prompt", ("prompt must be text", "the number 42")),
    ("list-prompt", {"prompt": ["a", "b"]}, None, "invalid_prompt", ("a list",)),
    ("long-prompt", {"prompt": "x" * (LIMIT + 1)}, None, "prompt_too_long",
     (KEY, "2,001 characters", "limit is 2,000", "shorten")),
    ("metadata-seed-text", None, {"seed": "abc"}, "invalid_seed", (f"{META}seed", '"abc"')),
    ("metadata-seed-fraction", None, {"seed": "1.5"}, "invalid_seed", (f"{META}seed", "whole number")),
    ("metadata-seed-empty", None, {"seed": ""}, "invalid_seed", (f"{META}seed",)),
    ("metadata-seed-range", None, {"seed": "-5"}, "invalid_seed", ("seed -5 is out of range",)),
    ("metadata-seed-huge", None, {"seed": "99999999999"}, "invalid_seed", ("99999999999 is out of range",)),
    ("metadata-resolution", None, {"resolution": "4k"}, "invalid_resolution", (f"{META}resolution", '"4k"')),
    ("metadata-long-prompt", None, {"prompt": "y" * (LIMIT + 1)}, "prompt_too_long", (f"{META}prompt",)),
]


@pytest.mark.parametrize(("sidecar", "metadata", "code", "fragments"),
                         [case[1:] for case in ERRORS], ids=[case[0] for case in ERRORS])
def test_invalid_params_are_refused_with_a_precise_reason(sidecar: bytes | dict[str, Any] | None,
                                                          metadata: dict[str, str] | None, code: str,
                                                          fragments: tuple[str, ...]) -> None:
    with pytest.raises(InputError) as refused:
        resolve(sidecar, metadata)
    assert refused.value.code == code, refused.value.reason
    for fragment in fragments:
        assert fragment in refused.value.reason


def test_a_long_bad_value_is_shown_cut_short() -> None:
    with pytest.raises(InputError) as refused:
        resolve({"resolution": "r" * 500})
    assert len(refused.value.reason) < 300
    assert '…"' in refused.value.reason


def test_without_a_sidecar_key_the_message_still_says_where() -> None:
    with pytest.raises(InputError, match=r"^the params file is not valid JSON"):
        resolve_params(b"{", {}, defaults=DEFAULTS, max_prompt_chars=LIMIT)


# --- properties ----------------------------------------------------------------------------


@given(st.integers())
def test_any_integer_seed_is_accepted_exactly_when_in_range(seed: int) -> None:
    in_range = -1 <= seed <= SEED_MAX
    for source in ({"sidecar": {"seed": seed}}, {"metadata": {"seed": str(seed)}}):
        try:
            assert resolve(**source).seed == seed and in_range
        except InputError as refused:
            # A number longer than any seed is refused by the document parser before it is a seed.
            assert not in_range and refused.code in ("invalid_seed", "number_too_long")


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
                    | st.text(max_size=20), lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=10), inner, max_size=3), max_leaves=10)


@given(st.one_of(JSON, st.dictionaries(st.sampled_from(["prompt", "resolution", "seed"]), JSON)))
def test_any_json_document_gives_params_or_an_input_error(document: Any) -> None:
    try:
        params = resolve(json.dumps(document).encode())
    except InputError as refused:
        assert refused.reason.startswith(KEY)
    else:
        assert params.resolution in ("480p", "720p") and -1 <= params.seed <= SEED_MAX


@given(st.binary(max_size=200))
def test_any_bytes_give_params_or_an_input_error(raw: bytes) -> None:
    try:
        resolve(raw)
    except InputError as refused:
        assert refused.code
