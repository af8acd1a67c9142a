"""Writers for a :class:`~harness.report.RunReport`: JSON (more formats join here)."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from harness.report import RunReport

SCHEMA_VERSION = 1


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to a temp file beside ``path``, then rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def to_json_dict(report: RunReport) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "nn-parity",
        "command": report.command,
        "ok": report.ok,
        "counts": report.counts(),
        "summary": report.summary,
        "layers": [lr.to_dict() for lr in report.layers],
        "figures": [str(p) for p in report.figures],
    }


def write_json(report: RunReport, path: str | os.PathLike) -> Path:
    return atomic_write_text(path, json.dumps(to_json_dict(report), indent=2, default=str) + "\n")


def write_reports(report: RunReport, args: Any) -> None:
    if getattr(args, "json", None):
        write_json(report, args.json)
