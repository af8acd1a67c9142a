"""Terminal output: a rich console that respects NO_COLOR and non-TTY output."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

from rich.console import Console

from harness.compare import ERROR, FAIL, PASS, VACUOUS

_STYLE = {PASS: "green", FAIL: "bold red", VACUOUS: "yellow", ERROR: "bold magenta"}


def console(stderr: bool = False) -> Console:
    no_color = "NO_COLOR" in os.environ or not (sys.stderr if stderr else sys.stdout).isatty()
    return Console(stderr=stderr, no_color=no_color, highlight=False,
                   width=None if sys.stdout.isatty() else 160)


def status_text(status: str) -> str:
    style = _STYLE.get(status, "")
    return f"[{style}]{status}[/{style}]" if style else status


@contextlib.contextmanager
def progress_bar(label: str, total: int, enabled: bool = True) -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr when it is a terminal; a no-op otherwise."""
    if not enabled or not sys.stderr.isatty():
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console(stderr=True), transient=True) as prog:
        task = prog.add_task(label, total=total)
        yield lambda: prog.advance(task)
