"""Terminal output: a rich console that respects NO_COLOR and non-TTY output.

* Output to a terminal gets colours and a progress bar (on stderr).
* ``NO_COLOR`` (set and not empty, https://no-color.org) turns every ANSI style off, bold
  included: the output is plain text with the same layout.
* Output that is not a terminal (a pipe, a file, CI logs) is plain text, 160 columns wide
  (``COLUMNS``, a positive number, overrides), with no progress bar. ``FORCE_COLOR`` forces
  colours back on.
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

from rich.console import Console

from harness.compare import ERROR, FAIL, PASS, VACUOUS, TensorResult
from harness.report import RunReport

_STYLE = {PASS: "green", FAIL: "bold red", VACUOUS: "yellow", ERROR: "bold magenta"}


def no_color() -> bool:
    return os.environ.get("NO_COLOR", "") != ""


def _isatty(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class ParityConsole(Console):
    """A rich ``Console`` whose reader leaving (``nn-parity check | head``) is a
    ``BrokenPipeError`` for the command to handle. Rich's own handling exits with status 1,
    which reads as "a mismatch" to a script or CI."""

    def on_broken_pipe(self) -> None:
        self.quiet = True  # nothing more to print: the reader is gone
        raise BrokenPipeError(errno.EPIPE, "the reader of the output left")


def console(stderr: bool = False, file: IO[str] | None = None) -> Console:
    """A console on ``file`` (default stdout, or stderr): styled only on a colour terminal."""
    stream = file if file is not None else (sys.stderr if stderr else sys.stdout)
    tty = _isatty(stream)
    force = os.environ.get("FORCE_COLOR", "") != "" and not no_color()
    kwargs: dict = {"file": stream, "highlight": False}
    if no_color() or not (tty or force):
        kwargs["color_system"] = None  # no ANSI escape at all, not even bold
        kwargs["force_terminal"] = False
    columns = os.environ.get("COLUMNS", "")
    if not (columns.isdigit() and int(columns) > 0):  # unset, or COLUMNS=0 (rich printed nothing)
        if tty:
            try:
                kwargs["width"] = os.get_terminal_size(stream.fileno()).columns or 80
            except (OSError, ValueError, AttributeError):
                kwargs["width"] = 80
        else:
            kwargs["width"] = 160
    return ParityConsole(**kwargs)


def print_text(con: Console, text: str, style: str | None = None) -> None:
    """Print ``text`` verbatim: no markup, no highlighting, long lines never re-wrapped."""
    con.print(text, markup=False, highlight=False, soft_wrap=True, style=style)


def table_diff_cells(row: dict[str, Any]) -> tuple[str, str]:
    """The "max abs diff" and "max rel diff" cells of one row of check's table (a row of
    ``harness.check_command.aggregate``): ``2.38e-07``, or, where no difference was computed
    (a shape or dtype mismatch, an exception, nothing compared), ``shape``, ``dtype`` or an em
    dash instead of a ``0.00e+00`` that would read as "no difference"."""
    from harness.reports import row_unmeasured, unmeasured_label

    label = unmeasured_label(row_unmeasured(row))
    if label is not None:
        return label, label
    return f"{row['max_abs']:.2e}", f"{row['max_rel']:.2e}"


def detail_text(r: TensorResult, report: RunReport) -> str:
    """A result's report as printed after the table: ``str(r)`` with the batch and seed of
    the run it came from in its first line (``Affine.dx [float32, shape (1, 7), batch 1,
    seed 1]: FAIL``), so it can be reproduced without ``-v``."""
    for lr in report.layers:
        if any(x is r for x in lr.results):
            return lr.result_text(r)
    return str(r)


def status_text(status: str) -> str:
    style = _STYLE.get(status, "")
    return f"[{style}]{status}[/{style}]" if style else status


@contextlib.contextmanager
def progress_bar(label: str, total: int, enabled: bool = True) -> Iterator[Callable[[], None]]:
    """A rich progress bar on stderr when it is a terminal; a no-op otherwise."""
    if not enabled or not _isatty(sys.stderr):
        yield lambda: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    with Progress("[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console(stderr=True), transient=True) as prog:
        task = prog.add_task(label, total=total)
        yield lambda: prog.advance(task)
