"""`recflow list` / `recflow show`: registered components and their parameter schemas."""

from __future__ import annotations

import pytest

from recflow.console import main


def test_list_names_components_and_their_distribution(capsys: pytest.CaptureFixture) -> None:
    assert main(["list", "models", "dcn*"]) == 0
    out = capsys.readouterr().out
    assert "dcnv2" in out and "recflow" in out and "deepfm" not in out
    assert main(["list", "losses"]) == 0
    assert "kd_bce" in capsys.readouterr().out


def test_show_prints_schema_with_defaults(capsys: pytest.CaptureFixture) -> None:
    assert main(["show", "models", "dcnv2"]) == 0
    out = capsys.readouterr().out
    assert "structure: Literal['stacked', 'parallel'] = 'parallel'" in out
    assert "cross_layers: int = 3" in out


def test_show_unknown_component_fails_clearly(capsys: pytest.CaptureFixture) -> None:
    assert main(["show", "models", "nope"]) == 1
    assert "unknown model 'nope'" in capsys.readouterr().err
