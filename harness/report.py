"""Report objects shared by every command: a layer's results, and a whole run's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.compare import ERROR, FAIL, PASS, VACUOUS, TensorResult


def _first(results: list[TensorResult], bad: tuple[str, ...]) -> TensorResult | None:
    return next((r for r in results if r.status in bad), None)


@dataclass
class LayerReport:
    """The outcome of one ``check_layer``/``check_net`` call: one result per tensor compared."""

    layer: str
    dtype: str
    input_shape: tuple[int, ...] = ()
    seed: int | None = None
    results: list[TensorResult] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.results) and all(r.status == PASS for r in self.results)

    @property
    def status(self) -> str:
        for s in (ERROR, FAIL, VACUOUS):
            if any(r.status == s for r in self.results):
                return s
        return PASS if self.results else VACUOUS

    @property
    def failures(self) -> list[TensorResult]:
        return [r for r in self.results if r.status != PASS]

    @property
    def first_divergence(self) -> TensorResult | None:
        """The first tensor, in comparison order (forward, then backward), that is not PASS."""
        return _first(self.results, (FAIL, ERROR)) or _first(self.results, (VACUOUS,))

    def __getitem__(self, tensor: str) -> TensorResult:
        for r in self.results:
            if r.tensor == tensor or r.name == tensor:
                return r
        raise KeyError(f"{self.layer}: no tensor {tensor!r}; have {[r.tensor for r in self.results]}")

    def __str__(self) -> str:
        head = (f"{self.layer} [{self.dtype}, input {self.input_shape}, seed {self.seed}]: "
                f"{self.status}")
        lines = [head]
        first = self.first_divergence
        if first is not None:
            lines.append(f"  first divergence: {first.name}")
        for r in self.results:
            lines.extend("  " + line for line in str(r).splitlines())
        lines.extend(f"  note: {n}" for n in self.info.get("notes", ()))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        first = self.first_divergence
        return {
            "layer": self.layer,
            "dtype": self.dtype,
            "input_shape": list(self.input_shape),
            "seed": self.seed,
            "status": self.status,
            "first_divergence": first.name if first else None,
            "results": [r.to_dict() for r in self.results],
            "info": self.info,
        }


@dataclass
class RunReport:
    """Everything one command produced: layer reports, free-form summary, figures."""

    command: str
    layers: list[LayerReport] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    figures: list[Path] = field(default_factory=list)
    ok_override: bool | None = None
    verdict: str | None = None  # the command's own one-line verdict, where it has one
    # Output files (a figure, curves) that could not be written: the run still writes every
    # other report, then exits 2 (harness.cli.main).
    output_errors: list[str] = field(default_factory=list)

    @property
    def results(self) -> list[TensorResult]:
        return [r for lr in self.layers for r in lr.results]

    @property
    def ok(self) -> bool:
        if self.ok_override is not None:
            return self.ok_override
        return all(lr.ok for lr in self.layers)

    def counts(self) -> dict[str, int]:
        out = {PASS: 0, FAIL: 0, VACUOUS: 0, ERROR: 0}
        for r in self.results:
            out[r.status] = out.get(r.status, 0) + 1
        return out
