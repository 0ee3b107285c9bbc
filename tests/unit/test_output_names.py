"""Output names (``s2v.model.outputs``, ``s2v.model.naming``): no name a user can write lands on
another output's key, and ranks order jobs as they were recorded."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2v.model.errors import InputError
from s2v.model.naming import output_base
from s2v.model.outputs import (
    KINDS,
    VIDEO,
    aside_key,
    check_name,
    is_reserved,
    owner,
    plain_key,
    rank,
)

names = st.text(min_size=1, max_size=40)
endings = st.sampled_from([".error", ".cancelled", ".report", ".ERROR", ".0123456789ab", ".ABCDEF012345", "", ".mp4",
                            ".previous-0123456789ab"])


@given(folder=st.text(max_size=8), first=names, second=names, ending=endings,
       job_ids=st.lists(st.text("0123456789abcdef", min_size=32, max_size=32), min_size=2, max_size=2))
def test_no_two_names_share_a_key_of_any_kind(folder: str, first: str, second: str, ending: str,
                                              job_ids: list[str]) -> None:
    # Given any two names a user can write (stems, or what output_name templates rendered)
    bases = {output_base(folder, first, "outputs/"), output_base(folder, second + ending, "outputs/")}
    # Then no base ends like a report or a kept-aside name...
    assert not any(is_reserved(base) for base in bases)
    # ...and two different bases never share a key: a video, report or marker, plain or kept aside
    keys = [(base, key) for base in bases for kind in KINDS
            for key in (plain_key(base, kind), *(aside_key(base, kind, j) for j in job_ids),
                        # where an object from before ranks is kept aside (``flows.outputs._keep_aside``)
                        *(f"{base}.previous-{j[:12]}{kind.suffix}" for j in job_ids))]
    owners: dict[str, str] = {}
    for base, key in keys:
        assert owners.setdefault(key, base) == base, f"{key} belongs to {owners[key]} and {base}"


@pytest.mark.parametrize("name", ["b.error", "talks/b.cancelled", "x.Report"])
def test_a_stem_that_ends_like_a_report_is_refused_with_what_to_do(name: str) -> None:
    with pytest.raises(InputError) as refused:
        check_name(name, "The file name")
    assert refused.value.code == "reserved_name" and "Rename" in refused.value.reason


@pytest.mark.parametrize("name", ["alice", "alice.take2", "alice.0123456789ab", "error", "report"])
def test_ordinary_names_and_job_named_outputs_are_accepted(name: str) -> None:
    check_name(name, "The file name")


@given(a=st.floats(min_value=0, max_value=4e9), b=st.floats(min_value=0, max_value=4e9),
       ida=st.text("0123456789abcdef", min_size=32, max_size=32), idb=st.text("0123456789abcdef", min_size=32,
                                                                              max_size=32))
def test_a_job_recorded_later_ranks_higher(a: float, b: float, ida: str, idb: str) -> None:
    if round(a * 1e6) != round(b * 1e6):
        assert (rank(a, ida) < rank(b, idb)) == (round(a * 1e6) < round(b * 1e6))
    else:
        assert (rank(a, ida) < rank(b, idb)) == (ida < idb)


def test_an_object_without_a_rank_ranks_below_every_job() -> None:
    assert owner({"Metadata": {}}) == ("", "") and rank(0.0, "0") > ""
    assert owner(None) == ("", "")


def test_kept_aside_keys_are_per_job_and_per_kind() -> None:
    base = "outputs/talks/alice"
    keys = {aside_key(base, kind, job) for kind in KINDS for job in ("a" * 32, "b" * 32)}
    assert len(keys) == 2 * len(KINDS)
    assert aside_key(base, VIDEO, "0123456789abcdef") == "outputs/talks/alice.0123456789ab.mp4"
