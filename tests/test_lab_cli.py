"""``energyhubd lab``'s choice of prefix: the first free one, said out loud; a running lab is
never torn down by a check."""

from __future__ import annotations

import argparse

import pytest

from energyhub_lab import cli


def test_free_prefix_skips_running_labs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cli, "lab_in_use", lambda prefix: prefix in ("eh", "eh2"))
    assert cli.free_prefix() == "eh3"
    monkeypatch.setattr(cli, "lab_in_use", lambda prefix: False)
    assert cli.free_prefix() == "eh"


def test_check_says_which_prefix_it_took(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli.os, "geteuid", lambda: 0)
    monkeypatch.setattr(cli, "lab_in_use", lambda prefix: prefix == "eh")
    seen: list[str] = []

    class Stop(Exception):
        pass

    def fake_site(prefix: str) -> object:
        seen.append(prefix)
        raise Stop

    monkeypatch.setattr(cli, "Site", fake_site)
    args = argparse.Namespace(action="check", prefix=None, file=None, keep=False)
    with pytest.raises(Stop):
        cli.main(args)
    assert seen == ["eh2"]
    assert "using prefix eh2 (eh is in use by a running lab)" in capsys.readouterr().err


def test_check_refuses_a_named_prefix_whose_lab_runs(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli.os, "geteuid", lambda: 0)
    monkeypatch.setattr(cli, "lab_in_use", lambda prefix: True)
    args = argparse.Namespace(action="check", prefix="mine", file=None, keep=False)
    assert cli.main(args) == 1
    assert "lab mine is up" in capsys.readouterr().err
