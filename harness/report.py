"""Report objects shared by every command: a layer's results, and a whole run's."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from harness.compare import ERROR, FAIL, PASS, VACUOUS, TensorResult


def _first(results: list[TensorResult], bad: tuple[str, ...]) -> TensorResult | None:
    return next((r for r in results if r.status in bad), None)


# What each status means, for a report's headline ("<layer> [...]: FAIL: scratch differs from
# PyTorch"): only a FAIL is a difference; a VACUOUS check compared nothing that proves
# anything, an ERROR compared nothing at all.
STATUS_MEANING = {
    PASS: "scratch matches PyTorch",
    FAIL: "scratch differs from PyTorch",
    VACUOUS: "the comparison proves nothing (see why below)",
    ERROR: "could not be compared: the scratch code raised",
}


def unmeasured(r: TensorResult) -> str | None:
    """Why ``r.max_abs``/``r.max_rel`` are not measured differences, or None when they are.

    ``compare`` fills them (and ``max_abs_index``) only once both sides have the same shape
    and dtype; a shape or dtype mismatch, an exception (ERROR), an empty tensor or a check
    that compared nothing leaves them at 0.0, which must not read as "no difference".
    Returns ``"shape"``, ``"dtype"``, ``"error"`` or ``"not compared"``."""
    if r.status == PASS or r.max_abs != 0.0 or r.max_rel != 0.0 or r.max_abs_index is not None:
        return None  # a NaN or non-zero is a measured difference; an index says one was taken
    if r.status == ERROR:
        return "error"
    msg = r.message.lower()
    if "shape mismatch" in msg or "changed the shape" in msg:
        return "shape"
    if "dtype mismatch" in msg or "non-numeric dtype" in msg:
        return "dtype"
    return "not compared"


def with_context(r: TensorResult, **context: Any) -> str:
    """``str(r)`` with ``context`` (e.g. ``batch=3, seed=1``) after the status on its first
    line, ``Affine.dx [float32, shape (3, 7)]: FAIL (batch 3, seed 1)``, so the block alone
    says how to reproduce it. Items whose value is None are left out."""
    extra = ", ".join(f"{k} {v}" for k, v in context.items() if v is not None)
    text = str(r)
    if not extra:
        return text
    first, sep, rest = text.partition("\n")
    return f"{first} ({extra}){sep}{rest}"


@dataclass
class LayerReport:
    """The outcome of one ``check_layer``/``check_net`` call: one result per tensor compared."""

    layer: str
    dtype: str
    input_shape: tuple[int, ...] = ()
    seed: int | None = None
    results: list[TensorResult] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    elapsed: float | None = None
    """Wall-clock seconds the check took (None: not timed); the JUnit ``time`` attributes."""

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

    @property
    def is_optimizer(self) -> bool:
        """An optimizer's check: its ``input_shape`` is ``(steps,)``, not a batch."""
        return (self.info.get("group") == "optimizer" or "steps" in self.info
                or "lr_schedule" in self.info or any(r.tensor == "update" for r in self.results))

    @property
    def batch_requested(self) -> int | None:
        """The batch size the run asked for (``info["batch"]``, set by ``nn-parity check``)."""
        b = self.info.get("batch")
        return b if isinstance(b, int) and not isinstance(b, bool) else None

    @property
    def batch(self) -> int | None:
        """The batch size the check really ran at: the input's first dimension, which exceeds
        the requested one where a layer needs a minimum batch (BatchNorm in training runs at
        3 under ``--batches 1``). An optimizer's: the requested one. None when unknown."""
        if self.input_shape and not self.is_optimizer:
            return int(self.input_shape[0])
        return self.batch_requested

    def headline(self) -> str:
        """``<layer> [<dtype>, input <shape>, seed <seed>]: <STATUS>: <what it means>``."""
        meaning = STATUS_MEANING.get(self.status, "")
        steps = self.info.get("steps")  # an optimizer check: steps, not an input
        what = f"{steps} steps" if steps else f"input {tuple(self.input_shape)}"
        return (f"{self.layer} [{self.dtype}, {what}, seed {self.seed}]: "
                f"{self.status}" + (f": {meaning}" if meaning else ""))

    def result_text(self, r: TensorResult) -> str:
        """``str(r)``; one that does not pass with this run's batch and seed in its first line,
        so that the block alone says how to reproduce it."""
        return str(r) if r.status == PASS else with_context(r, batch=self.batch, seed=self.seed)

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
            lines.extend("  " + line for line in self.result_text(r).splitlines())
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
            "elapsed": self.elapsed,
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
    # The reader of stdout left while the finished run was being printed (``| head``): the
    # reports are still written and the exit code is the verdict's (harness.cli.main).
    output_closed: bool = False

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
