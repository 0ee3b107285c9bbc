"""Each checkout's local stack has its own home: state file, data folder, stack (and bucket) name,
and one stack at a time on a data folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from s2v_local import home


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (home.HOME_ENV, home.STATE_ENV, home.DATA_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_by_default_the_state_and_data_live_in_the_checkout(clean_env: pytest.MonkeyPatch) -> None:
    assert home.state_path() == home.CHECKOUT / ".s2v" / "local.json"
    assert home.data_dir() == home.CHECKOUT / ".s2v" / "local-data"
    assert ".s2v/" in (home.CHECKOUT / ".gitignore").read_text()


def test_a_home_moves_both_and_names_its_own_stable_stack(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    names = []
    for folder in ("a", "b", "a"):
        clean_env.setenv(home.HOME_ENV, str(tmp_path / folder))
        assert home.state_path().parent == home.data_dir().parent == tmp_path / folder
        names.append(home.stack_name())
    assert names[0] == names[2] != names[1]


def test_a_state_file_named_alone_keeps_its_data_beside_it(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv(home.STATE_ENV, str(tmp_path / "s" / "local.json"))
    assert home.data_dir() == tmp_path / "s" / "local-data"


def test_one_stack_at_a_time_holds_a_data_folder_and_the_second_is_told_who(tmp_path: Path) -> None:
    first = home.claim(tmp_path / "data")
    first.note(endpoint_url="http://127.0.0.1:1234")
    with pytest.raises(home.DataInUse, match=r"process \d+, http://127\.0\.0\.1:1234.*s2v local down"):
        home.claim(tmp_path / "data")
    first.release()
    home.claim(tmp_path / "data").release()  # free again once released
