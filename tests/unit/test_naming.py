"""Output names: templates render as documented, and nothing a name, a template or a folder holds
(``..``, absolute keys, control characters, 1,024-byte keys) gets a key outside ``outputs/``."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2v.model.errors import InputError
from s2v.model.naming import MAX_BASE_BYTES, check_template, output_base, render

CREATED = 1_767_225_600.0  # 2026-01-01T00:00:00Z
JOB = "0123456789abcdef0123456789abcdef"


def named(template: str, *, stem: str = "alice", folder: str = "talks/week1", resolution: str = "720p") -> str:
    return render(check_template(template, "t:"), stem=stem, folder=folder, resolution=resolution,
                  created_at=CREATED, job_id=JOB)


def assert_safe(key: str) -> None:
    assert key.startswith("outputs/")
    segments = key[len("outputs/"):].split("/")
    assert all(s not in ("", ".", "..") for s in segments), key
    assert not any(ord(ch) < 32 or ord(ch) == 127 for ch in key), key
    # The longest suffix added to a base, with a kept previous job's id in front of it.
    assert len((key + ".0123456789ab.cancelled.json").encode()) <= 1024


def test_each_placeholder_renders() -> None:
    assert named("{stem}") == "alice"
    assert named("{folder}-{stem}-{resolution}") == "week1-alice-720p"
    assert named("{date}/{stem}.{job}") == "2026-01-01/alice.0123456789ab"
    assert output_base("talks/week1", named("{date}/{stem}"), "outputs/") == "outputs/talks/week1/2026-01-01/alice"


@pytest.mark.parametrize(("template", "words"), [
    ("{stem}-{colour}", "{colour}, which is not a placeholder"),
    ("{stem", "not a valid template"),
    ("{stem:>10}", "without ':' or '!'"),
    ("{stem!r}", "without ':' or '!'"),
    ("   ", "is empty"),
    ("x" * 300, "the limit is 256"),
])
def test_bad_templates_are_refused_with_a_reason(template: str, words: str) -> None:
    with pytest.raises(InputError) as raised:
        check_template(template, "inputs/a/_defaults.json:")
    assert raised.value.code == "invalid_output_name"
    assert words in raised.value.reason and raised.value.reason.startswith("inputs/a/_defaults.json:")


def test_a_template_that_is_not_text_is_refused() -> None:
    with pytest.raises(InputError, match="must be text"):
        check_template(42, "row 3:")


@pytest.mark.parametrize("template", [
    "../../etc/passwd", "/absolute/{stem}", "..", "./{stem}", "a/../../{stem}", "{stem}\n../x", "\x00/\x1b[31m",
    "//{stem}//", "outputs/../inputs/{stem}", "../" * 80 + "{stem}",
])
def test_templates_cannot_climb_out_of_the_output_folder(template: str) -> None:
    key = output_base("talks", named(template), "outputs/")
    assert_safe(key)
    assert key.startswith("outputs/talks/")


@pytest.mark.parametrize("value", ["../../x", "/etc", "a/b", "\r\n", "..", "x\x00y"])
def test_placeholder_values_cannot_add_folders_or_climb(value: str) -> None:
    key = output_base("talks", render("{stem}", stem=value, folder=value, resolution="480p", created_at=CREATED,
                                      job_id=JOB), "outputs/")
    assert_safe(key)
    assert key.count("/") == 2  # outputs/talks/<one name>


def test_a_1024_byte_folder_and_name_are_cut_to_a_bounded_key_marked_with_a_digest() -> None:
    folder = "/".join(["é" * 100] * 6)  # about 1,200 bytes
    first = output_base(folder, "n" * 1024, "outputs/")
    second = output_base(folder, "n" * 1023, "outputs/")
    assert_safe(first)
    assert len(first.encode()) <= MAX_BASE_BYTES and first != second  # the digest keeps them apart


@given(folder=st.text(max_size=400), name=st.text(max_size=1100))
def test_any_folder_and_name_give_a_safe_key(folder: str, name: str) -> None:
    assert_safe(output_base(folder, name, "outputs/"))
