"""The one bounded parser (s2v.model.documents) against hostile documents, generated.

Whatever a user writes in a sidecar, a folder's ``_defaults.json`` or a manifest, the parser answers
with a value that can be stored and shown, or an ``InputError`` with a code: never a RecursionError,
a ValueError, an OverflowError, a UnicodeEncodeError, nor text a store cannot hold.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from s2v.model import documents
from s2v.model.errors import InputError
from s2v.model.manifest import ManifestError, parse_manifest
from s2v.model.params import Params, parse_document, resolve_params

CODES = {"document_too_large", "document_too_deep", "number_too_long", "too_many_keys", "not_utf8_text",
         "invalid_json", "string_too_long"}
EXAMPLE = '{"seed": 1}'
PARAMS_CODES = CODES | {"not_a_json_object", "unknown_params", "invalid_seed", "invalid_prompt", "prompt_too_long",
                        "invalid_resolution", "unknown_model", "invalid_order", "invalid_segment_seconds",
                        "invalid_output_name", "sidecar_too_large"}
MANIFEST_CODES = {"invalid_manifest", "manifest_too_large", "document_too_deep", "number_too_long",
                  "too_many_keys", "unknown_columns", "missing_columns", "empty_manifest", "too_many_rows",
                  "too_many_columns"}

SURROGATES = st.integers(0xD800, 0xDFFF).map(lambda c: f"\\u{c:04x}")
HUGE_NUMBERS = st.integers(25, 6000).flatmap(
    lambda n: st.sampled_from(["1" * n, "-" + "9" * n, "1e" + "9" * n, "0." + "7" * n, "1" * n + ".5"]))
NESTING = st.integers(5, 20_000).flatmap(lambda d: st.sampled_from(["[" * d + "]" * d, '{"a":' * d + "1" + "}" * d,
                                                                   "[" * d, '{"rows": ' + "[" * d + "]" * d + "}"]))
KEY = st.text(min_size=1, max_size=12)
SCALAR_TEXT = st.one_of(
    st.just("null"), st.just("true"), st.integers().map(str), HUGE_NUMBERS,
    st.text(max_size=30).map(json.dumps), SURROGATES.map(lambda s: f'"x{s}y"'),
    st.integers(70_000, 200_000).map(lambda n: json.dumps("p" * n)),
)


def _object(members: list[tuple[str, str]]) -> str:
    return "{" + ", ".join(f"{json.dumps(k)}: {v}" for k, v in members) + "}"


def _array(items: list[str]) -> str:
    return "[" + ", ".join(items) + "]"


# Documents as JSON text (so escapes and literals the json module would never write are included).
DOCUMENTS = st.recursive(
    SCALAR_TEXT,
    lambda inner: st.one_of(st.lists(inner, max_size=4).map(_array),
                            st.lists(st.tuples(KEY | SURROGATES.map(lambda s: "k" + s), inner), max_size=4)
                            .map(_object)),
    max_leaves=12,
) | NESTING | st.integers(65, 5000).map(lambda n: _object([(f"col{i}", "1") for i in range(n)]))


def _storable(value: object) -> None:
    """What the parser returns can be written anywhere: JSON text that encodes as UTF-8."""
    json.dumps(value, ensure_ascii=False).encode("utf-8")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS, st.sampled_from(["", "\ufeff"]))
def test_a_hostile_document_is_a_storable_value_or_an_input_error_with_a_code(text: str, bom: str) -> None:
    try:
        value = documents.parse((bom + text).encode("utf-8", "surrogatepass"), "inputs/x.json", documents.SIDECAR,
                                example=EXAMPLE)
    except InputError as refused:
        assert refused.code in CODES and refused.reason.startswith("inputs/x.json")
        refused.reason.encode("utf-8")  # the reason itself can be stored and shown
        return
    _storable(value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS)
def test_a_hostile_sidecar_resolves_to_params_or_an_input_error(text: str) -> None:
    try:
        params = resolve_params(text.encode("utf-8", "surrogatepass"), {}, defaults=Params(), max_prompt_chars=2000,
                                sidecar_key="inputs/a.json")
    except InputError as refused:
        assert refused.code in PARAMS_CODES, refused.code
        refused.reason.encode("utf-8")
        return
    _storable(params.as_dict())


ROW = st.dictionaries(st.sampled_from(["image", "audio", "prompt", "seed", "resolution", "segment_seconds"]),
                      SCALAR_TEXT, max_size=6)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(ROW.map(lambda r: _object(list(r.items()))), min_size=1, max_size=6).map(_array) | DOCUMENTS)
def test_a_hostile_manifest_is_rows_each_storable_or_a_manifest_error(text: str) -> None:
    try:
        manifest = parse_manifest(text.encode("utf-8", "surrogatepass"), "inputs/m.batch.json",
                                  input_prefix="inputs/", max_rows=100, max_prompt_chars=2000)
    except ManifestError as refused:
        assert refused.code in MANIFEST_CODES, refused.code
        refused.reason.encode("utf-8")
        return
    for row in manifest.rows:  # a bad row carries its error; every row can be stored as a job
        _storable([row.image_key, row.audio_key, dict(row.params), row.error.reason if row.error else ""])


@pytest.mark.parametrize(("text", "code"), [
    ("[" * 5000 + "]" * 5000, "document_too_deep"),
    ('{"seed": ' + "1" * 5000 + "}", "number_too_long"),
    ('{"segment_seconds": 1e' + "9" * 400 + "}", "number_too_long"),
    ('{"segment_seconds": 1e999}', "number_too_long"),
    ('{"prompt": "\\ud800"}', "not_utf8_text"),
    ('{"\\udfff": 1}', "not_utf8_text"),
    (_object([(f"c{i}", "1") for i in range(5000)]), "too_many_keys"),
])
def test_each_bound_has_its_own_code(text: str, code: str) -> None:
    with pytest.raises(InputError) as refused:
        parse_document(text.encode(), "inputs/_defaults.json")
    assert refused.value.code == code


def test_a_surrogate_pair_written_as_escapes_is_text() -> None:
    assert parse_document(b'{"prompt": "\\ud83d\\ude00"}', "inputs/a.json") == {"prompt": "\U0001f600"}


def test_a_manifest_row_with_a_lone_surrogate_fails_that_row_only() -> None:
    text = json.dumps([{"image": "a.png", "audio": "a.wav", "prompt": "fine"},
                       {"image": "b.png", "audio": "b.wav", "prompt": "PLACEHOLDER"}]).replace("PLACEHOLDER", "\\ud800")
    manifest = parse_manifest(text.encode(), "inputs/m.batch.json", input_prefix="inputs/", max_rows=10,
                              max_prompt_chars=2000)
    assert manifest.rows[0].error is None
    assert manifest.rows[1].error is not None and manifest.rows[1].error.code == "not_utf8_text"
    _storable(dict(manifest.rows[1].params))


def test_thousands_of_unknown_csv_columns_are_refused_before_any_is_described() -> None:
    header = ",".join(["image", "audio", *(f"x{i}" for i in range(20_000))])
    with pytest.raises(ManifestError) as refused:
        parse_manifest(f"{header}\na.png,a.wav\n".encode(), "inputs/m.batch.csv", input_prefix="inputs/",
                       max_rows=10, max_prompt_chars=2000)
    assert refused.value.code == "too_many_columns" and len(refused.value.reason) < 500


def test_a_text_seed_or_length_of_thousands_of_digits_is_an_input_error() -> None:
    for name, code in (("seed", "invalid_seed"), ("segment_seconds", "invalid_segment_seconds")):
        with pytest.raises(InputError) as refused:
            resolve_params(None, {name: "9" * 5000}, defaults=Params(), max_prompt_chars=10)
        assert refused.value.code == code


@pytest.mark.parametrize("key", ["inputs/m.batch.json", "inputs/m.batch.csv"])
def test_an_unknown_column_with_a_huge_name_is_refused_with_a_short_reason(key: str) -> None:
    name = "z" * 1_000_000
    body = (f"image,audio,{name}\na.png,a.wav,1\n" if key.endswith(".csv") else
            json.dumps([{"image": "a.png", "audio": "a.wav", name: 1}]))
    with pytest.raises(ManifestError) as refused:
        parse_manifest(body.encode(), key, input_prefix="inputs/", max_rows=10, max_prompt_chars=2000)
    # (CSV's own field limit may refuse it first, as not valid CSV: short either way)
    assert refused.value.code in ("unknown_columns", "invalid_manifest") and len(refused.value.reason) < 1000


def test_a_sidecar_key_with_a_huge_name_is_refused_with_a_short_reason() -> None:
    with pytest.raises(InputError) as refused:
        parse_document(json.dumps({"q" * 60_000: 1}).encode(), "inputs/a.json")
    assert refused.value.code == "unknown_params" and len(refused.value.reason) < 1000
