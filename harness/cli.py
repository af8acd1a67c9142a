"""The ``nn-parity`` command: ``check``, ``train``, ``selftest``, ``bench``.

Each subcommand lives in its own module exposing ``add_arguments(parser)`` and
``run(args) -> RunReport | int``. Exit codes: 0 all pass, 1 a mismatch (or a vacuous check),
2 usage or data error, 3 an internal error (a bug in nn-parity), 130 interrupted, 141 the
reader of the output left mid-run (``| head``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any, TextIO

EXIT_OK, EXIT_MISMATCH, EXIT_USAGE = 0, 1, 2
EXIT_INTERNAL = 3  # a bug in nn-parity itself: not a verdict on the checked code

COMMANDS: dict[str, tuple[str, str]] = {
    "check": ("harness.check_command", "check every registered layer and net against PyTorch"),
    "train": ("harness.train_command", "train NumPy and PyTorch side by side on real data"),
    "selftest": ("harness.selftest", "prove the harness catches injected bugs (mutation test)"),
    "bench": ("harness.bench", "time scratch vs PyTorch side by side and print the ratios"),
}


def add_output_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--json", metavar="PATH", help="write a machine-readable JSON report")
    g.add_argument("--junit-xml", metavar="PATH", help="write a JUnit XML report")
    g.add_argument("--html", metavar="PATH", help="write a self-contained HTML report")
    g.add_argument("--markdown", metavar="PATH", help="write a Markdown summary (CI job summary)")
    loud = g.add_mutually_exclusive_group()
    loud.add_argument("-q", "--quiet", action="store_true", help="print only the verdict")
    loud.add_argument("-v", "--verbose", action="store_true", help="print every tensor's report")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("nn-parity")
    except PackageNotFoundError:
        return "(not installed: run pip install -e .)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nn-parity",
        description="Prove that a from-scratch NumPy network computes what PyTorch computes.",
        epilog="exit codes: 0 all pass, 1 mismatch or vacuous check, 2 usage, setup or data error, "
               "3 internal error, 130 interrupted, 141 output closed by its reader mid-run (| head)",
    )
    parser.add_argument("--version", action="version", version=f"nn-parity {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser.set_defaults(_parsers={})
    for name, (modname, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        parser.get_default("_parsers")[name] = p
        try:
            mod = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            p.set_defaults(_missing=modname)
            continue
        mod.add_arguments(p)
        add_output_options(p)
        p.set_defaults(_run=mod.run)
    return parser


def _one_line_data_warnings(show: Callable[..., Any]) -> Callable[..., Any]:
    """A ``warnings.showwarning`` printing a DataWarning as ``warning: <message>`` on stderr
    (no file name, line number or source line); other warnings go to ``show``."""
    try:
        from harness.data import DataWarning
    except ImportError:  # pragma: no cover - data module always ships
        return show

    def showwarning(message: Warning | str, category: type[Warning], filename: str,
                    lineno: int, file: TextIO | None = None, line: str | None = None) -> None:
        if issubclass(category, DataWarning):
            print(f"warning: {message}", file=sys.stderr if file is None else file)
        else:
            show(message, category, filename, lineno, file, line)

    return showwarning


EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, what a shell reports for a command cut off by a pipe


def silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - no file descriptor (captured output)
        pass


def _internal_error(command: str) -> int:
    """The traceback of an exception inside nn-parity, a line saying what it means, and
    ``EXIT_INTERNAL``."""
    import traceback

    traceback.print_exc()
    print(f"nn-parity {command}: internal error: the traceback above is a bug in nn-parity, "
          f"not a verdict on the checked code (exit {EXIT_INTERNAL})", file=sys.stderr)
    return EXIT_INTERNAL


def main(argv: Sequence[str] | None = None) -> int:
    from harness.check import CheckError

    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # name the subcommand's usage, not the top-level one
        sub = args._parsers.get(getattr(args, "command", None) or "", parser)
        sub.error(f"unrecognized arguments: {' '.join(unknown)}")
    if not getattr(args, "command", None):
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "_missing", None):
        print(f"nn-parity {args.command}: not available ({args._missing} missing)", file=sys.stderr)
        return EXIT_USAGE
    try:
        from harness.data import DataError
    except ImportError:  # pragma: no cover - data module always ships
        DataError = OSError  # type: ignore[misc,assignment]
    from harness.reports import check_output_paths
    from harness.torch_worker import TorchSideError

    try:
        check_output_paths(args)  # before a run that may take minutes
    except SystemExit as exc:  # the message is on stderr
        return int(exc.code or EXIT_USAGE)
    try:
        with warnings.catch_warnings():  # restores warnings.showwarning afterwards
            warnings.showwarning = _one_line_data_warnings(warnings.showwarning)
            result = args._run(args)
    except (CheckError, DataError, FileNotFoundError, TorchSideError) as exc:
        print(f"nn-parity {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader left mid-run (nn-parity train | head): no traceback
        silence_stdout()
        return EXIT_BROKEN_PIPE
    except Exception:  # Python would exit 1, which reads as "a mismatch"
        return _internal_error(args.command)
    if isinstance(result, int):
        return result
    from harness.reports import write_reports

    try:
        write_reports(result, args)
    except SystemExit as exc:  # every other report is written; the failures are on stderr
        return int(exc.code or EXIT_USAGE)
    except Exception:  # a report that could not be rendered
        return _internal_error(args.command)
    if result.output_errors:  # a figure or curves file the command could not write
        return EXIT_USAGE
    if result.summary.get("setup_errors"):  # components that could not be checked at all
        return EXIT_USAGE
    return EXIT_OK if result.ok else EXIT_MISMATCH


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
