"""`kedro run` with one-screen errors (recflow.cli): short message, traceback to the log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import click
import pandas as pd
import pytest
from click.testing import CliRunner

from recflow import cli


def _command(callback) -> click.Command:
    return click.Command("run", callback=cli._one_screen(callback),
                         params=[click.Option(["--verbose"], is_flag=True)])


def test_short_failure_clips_long_messages_and_points_to_the_log():
    error = ValueError("\n".join(f"line {i}" for i in range(40)))
    text = cli.short_failure(error, Path("logs/last_failure.log"))
    assert "the run failed (ValueError)" in text
    assert "line 11" in text and "line 12" not in text
    assert "28 more line(s)" in text
    assert "logs/last_failure.log" in text and cli.DOCS in text
    assert len(text.splitlines()) <= 24


def test_an_unknown_namespace_gets_the_entry_namespaces_spelled_out(tmp_path, monkeypatch):
    """Ranking entries ran as `--namespaces=din` until 2026-11-30; Kedro's own error names
    no way out, the wrapper adds one."""
    monkeypatch.chdir(tmp_path)

    def fail(namespaces: str) -> None:
        raise ValueError(f"{cli.UNKNOWN_NAMESPACE}: {namespaces.split(',')}")

    command = click.Command("run", callback=cli._one_screen(fail), params=[
        click.Option(["--namespaces"]), click.Option(["--verbose"], is_flag=True)])
    result = CliRunner().invoke(command, ["--namespaces", "din"])
    assert result.exit_code == 1
    assert "the run failed (ValueError)" in result.output
    assert "--namespaces=ranking.din,export.din trains and exports it" in result.output
    result = CliRunner().invoke(command, ["--namespaces", "retrieval.nope"])
    assert "retrieval.<entry>" in result.output and "ranking.nope" not in result.output
    assert cli.namespace_hint(KeyError("other"), "din") == ""
    # Kedro 1.7 hands the run callback the option already split into a list
    error = ValueError(f"{cli.UNKNOWN_NAMESPACE}: ['din']")
    assert "--namespaces=ranking.din,export.din" in cli.namespace_hint(error, ["din"])


def test_failed_run_is_short_logged_and_non_zero(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def fail():
        raise KeyError("dataset.items.columns.price: expected > 0, got [-1.0]")

    result = CliRunner().invoke(_command(fail), [])
    assert result.exit_code == 1
    assert "dataset.items.columns.price" in result.output
    assert "Traceback" not in result.output
    log = (tmp_path / cli.LOG_FILE).read_text()
    assert "Traceback (most recent call last)" in log and "KeyError" in log

    verbose = CliRunner().invoke(_command(fail), ["--verbose"])
    assert verbose.exit_code == 1 and "Traceback (most recent call last)" in verbose.output


def test_interrupt_exits_130_and_usage_errors_keep_clicks_format(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)

    def interrupted():
        raise KeyboardInterrupt

    assert CliRunner().invoke(_command(interrupted), []).exit_code == 130

    def misuse():
        raise click.UsageError("Options '--pipeline' and '--pipelines' cannot be used together")

    result = CliRunner().invoke(_command(misuse), [])
    assert result.exit_code == 2 and "cannot be used together" in result.output


def test_unwritable_log_does_not_hide_the_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "logs").write_text("a file where the log folder should be")

    def fail():
        raise ValueError("the real problem")

    result = CliRunner().invoke(_command(fail), [])
    assert result.exit_code == 1 and "the real problem" in result.output
    assert "run again with --verbose" in result.output


def test_kedro_run_keeps_every_kedro_option():
    from kedro.framework.cli.project import run as kedro_run

    ours = {p.name for p in cli.run.params}
    assert {p.name for p in kedro_run.params} <= ours and "verbose" in ours


@pytest.mark.slow
def test_real_failed_run_prints_one_screen(project_factory):
    """A declared check fails in a node: the terminal gets the message, not 30 frames."""
    project = project_factory(n_impressions=3_000)
    items = pd.read_parquet(project / "data/01_raw/items.parquet")
    items.loc[:4, "price"] = -1.0
    items.to_parquet(project / "data/01_raw/items.parquet")
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "COLUMNS": "100"}
    kedro = Path(sys.executable).with_name("kedro")
    done = subprocess.run([str(kedro), "run", "--pipelines=preprocessing"], cwd=project,
                          env=env, capture_output=True, text=True, timeout=300)
    terminal = done.stdout + done.stderr
    assert done.returncode == 1, terminal[-2000:]
    assert "Traceback" not in terminal
    for noise in ("register_new_resolver", "PySpark", "'--pipeline' is deprecated"):
        assert noise not in terminal  # third-party warnings about others' code
    failure = terminal[terminal.index("recflow: the run failed"):]
    assert len(failure.splitlines()) <= 24
    assert "dataset.items.columns.price" in failure and "-1.0" in failure
    assert "RawDataError" in (project / cli.LOG_FILE).read_text()
