"""Kedro project commands: `kedro run` with one-screen errors.

Kedro loads `<package>.cli:cli` and lets its commands override the built-in ones (Kedro
docs, "how to add or modify CLI commands"). recflow keeps Kedro's own `run` (every option,
the same session) and changes one thing: a failed run ends with a short message (the error
recflow raised, which already names the file / key / column and the offending values),
the full traceback goes to `logs/last_failure.log`, and the exit status is 1 (130 on
Ctrl-C). `kedro run --verbose` prints the traceback as well.

Rollback of half-written outputs is not done here: `recflow.hooks.AtomicRunHooks` has
already restored the previous run by the time the error reaches this wrapper.
"""

from __future__ import annotations

import datetime as dt
import functools
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click
from kedro.framework.cli.project import run as kedro_run

LOG_FILE = Path("logs") / "last_failure.log"
#: Kedro's message when `--namespaces` names no node (kedro.pipeline.Pipeline)
UNKNOWN_NAMESPACE = "Pipeline does not contain nodes with the following namespaces"
#: each YAML entry runs under `<block>.<entry>` (before 2026-11-30, ranking entries: `<entry>`)
ENTRY_NAMESPACES = ("ranking", "export", "retrieval", "semantic_ids")
MAX_MESSAGE_LINES = 12  # with the header and the pointers below: one 24-line screen
DOCS = "docs/troubleshooting.md"


@click.group(name="recflow")
def cli() -> None:
    """recflow's project commands (Kedro's, with one-screen errors)."""


def short_failure(error: BaseException, log_file: Path | None, hint: str = "") -> str:
    """The terminal's account of a failed run: the error's own message (and `hint`), clipped."""
    lines = ((str(error).strip() or "(no message)") + hint).splitlines()
    if len(lines) > MAX_MESSAGE_LINES:
        hidden = len(lines) - MAX_MESSAGE_LINES
        lines = [*lines[:MAX_MESSAGE_LINES], f"... {hidden} more line(s) in the log file"]
    body = "\n".join(f"  {line}" for line in lines)
    where = (f"full traceback: {log_file} (or run again with --verbose)" if log_file
             else "traceback: run again with --verbose")
    return (f"\nrecflow: the run failed ({type(error).__name__})\n{body}\n"
            f"  {where}\n  help: {DOCS}\n")


def namespace_hint(error: BaseException, namespaces: str | Sequence[str] | None) -> str:
    """A line for Kedro's unknown-namespace error: entries run as `<block>.<entry>`, so a
    bare entry name (the ranking form until 2026-11-30) gets its spelled-out namespaces.
    `namespaces`: `--namespaces` as Kedro parsed it (a list) or as typed (comma-separated)."""
    if UNKNOWN_NAMESPACE not in str(error) or not namespaces:
        return ""
    names = namespaces.split(",") if isinstance(namespaces, str) else list(namespaces)
    bare = [n for n in names if n and "." not in n and n not in ENTRY_NAMESPACES]
    suggestion = ",".join(f"{b}.{n}" for n in bare for b in ("ranking", "export"))
    return ("\nEntries of a YAML block run under the namespace <block>.<entry>: "
            + ", ".join(f"{b}.<entry>" for b in ENTRY_NAMESPACES) + "."
            + (f" For a ranking entry, --namespaces={suggestion} trains and exports it."
               if bare else ""))


def write_failure_log(error: BaseException, argv: list[str], path: Path = LOG_FILE) -> Path | None:
    """Write the command, the time and the full traceback; None if the log cannot be written
    (a read-only checkout must not turn one error into two)."""
    text = "".join(traceback.format_exception(error))
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"{stamp}  kedro {' '.join(argv)}\n\n{text}", encoding="utf-8")
    except OSError:
        return None
    return path


def _one_screen(callback: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(callback)
    def wrapper(*args: Any, verbose: bool = False, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except click.exceptions.Exit:
            raise
        except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001 - the point of the wrapper
            log_file = write_failure_log(error, sys.argv[1:])
            if verbose:
                traceback.print_exception(error, file=sys.stderr)
            if isinstance(error, KeyboardInterrupt):
                click.echo("\nrecflow: interrupted; the previous run's outputs are kept "
                           "(see the log above)", err=True)
                sys.exit(130)
            if isinstance(error, click.ClickException):  # usage errors keep click's format
                raise
            hint = namespace_hint(error, kwargs.get("namespaces"))
            click.echo(short_failure(error, log_file, hint), err=True)
            sys.exit(1)

    return wrapper


run = click.Command(
    name="run",
    callback=_one_screen(kedro_run.callback),
    params=[*kedro_run.params,
            click.Option(["--verbose"], is_flag=True, default=False,
                         help="On failure, print the full traceback (it is always written "
                              f"to {LOG_FILE}).")],
    help=kedro_run.help,
    short_help=kedro_run.short_help,
)
cli.add_command(run)
