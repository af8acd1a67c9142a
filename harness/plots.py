"""Figures of a side-by-side training run (matplotlib, no display needed).

:func:`plot_training` draws the classic two panels, NumPy and PyTorch overlaid:

* loss per iteration (the loss of each step's mini-batch);
* train and test accuracy at every evaluation (one per epoch);

and below them the difference between the two runs on a log scale: |loss difference| per
step, the largest |parameter difference| per step (when recorded), and for float32 the
rounding noise floor (each framework's own float32-vs-float64 loss gap, from the float64
shadows) with the 2x limit above which a gap cannot be rounding. Exact zeros cannot be drawn
on a log axis; the legend counts them.

Only ``matplotlib.figure.Figure`` is used (no pyplot state, no GUI backend); the format
follows the file suffix (.png, .svg, .pdf, or any other format matplotlib writes here:
:func:`plot_formats`). A path without a suffix, or with one matplotlib cannot write, is a
ValueError before anything is drawn (:func:`check_plot_path`): matplotlib would otherwise
write ``PATH.png`` for a path without one, a file other than the one named.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from harness.train import Analysis, TrainResult

COLORS = {"numpy": "#1f77b4", "torch": "#d62728"}
LABELS = {"numpy": "NumPy (scratch)", "torch": "PyTorch"}


def plot_formats() -> dict[str, str]:
    """The file suffixes (lower case, no dot) :func:`plot_training` can write, with their
    descriptions: matplotlib's supported formats; ``pgf`` only where its TeX system
    (``rcParams["pgf.texsystem"]``) is installed."""
    import shutil

    import matplotlib
    from matplotlib.backend_bases import FigureCanvasBase

    formats = dict(FigureCanvasBase.get_supported_filetypes())
    if "pgf" in formats and shutil.which(str(matplotlib.rcParams["pgf.texsystem"])) is None:
        del formats["pgf"]
    return formats


def check_plot_path(path: str | os.PathLike[str]) -> None:
    """ValueError unless ``path`` ends in a suffix :func:`plot_training` can write."""
    suffix = Path(path).suffix
    formats = plot_formats()
    known = ", ".join(f".{k}" for k in sorted(formats))
    if not suffix:
        raise ValueError(f"{os.fspath(path)}: no file extension; the extension picks the format "
                         f"(.png, .svg, .pdf; supported: {known})")
    if suffix[1:].lower() not in formats:
        raise ValueError(f"{os.fspath(path)}: format {suffix!r} is not supported (supported: "
                         f"{known})")


def _log_values(a: np.ndarray) -> tuple[np.ndarray, int]:
    """NaN for values a log axis cannot show (zero, not recorded); count the exact zeros."""
    a = np.asarray(a, dtype=np.float64)
    zeros = int(np.count_nonzero(a == 0))
    return np.where(a > 0, a, np.nan), zeros


def plot_training(result: TrainResult, path: str | os.PathLike[str],
                  analysis: Analysis | None = None, *, dpi: int = 110,
                  title: str | None = None) -> Path:
    """Write the figure of ``result`` to ``path`` and return the path. The suffix picks the
    format; ValueError for a path without one or one matplotlib cannot write
    (:func:`check_plot_path`), before anything is drawn."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    check_plot_path(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cfg = result.config
    both = result.both
    fig = Figure(figsize=(12, 9.5 if both else 4.8), dpi=dpi, layout="constrained")
    if both:
        gs = fig.add_gridspec(2, 2, height_ratios=[1, 1])
        ax_loss, ax_acc = fig.add_subplot(gs[0, 0]), fig.add_subplot(gs[0, 1])
        ax_diff = fig.add_subplot(gs[1, :])
    else:
        ax_loss, ax_acc = fig.subplots(1, 2)
        ax_diff = None
    steps = np.arange(cfg.iters)

    # --- loss per iteration
    for i, f in enumerate(result.frameworks):
        ax_loss.plot(steps, result.loss[f], color=COLORS[f], lw=0.6 if i == 0 else 0.5,
                     alpha=0.85 if i == 0 else 0.7, ls="-" if i == 0 else "--", label=LABELS[f])
    ax_loss.set_xlabel("iteration")
    ax_loss.set_ylabel("loss (mini-batch)")
    ax_loss.set_title("loss per iteration")
    finite = np.concatenate([result.loss[f][np.isfinite(result.loss[f])]
                             for f in result.frameworks])
    if finite.size:
        ax_loss.set_ylim(0, min(float(np.percentile(finite, 99.5)) * 1.1, float(finite.max())))
    ax_loss.legend(loc="upper right")
    ax_loss.grid(alpha=0.3)

    # --- accuracy per epoch
    ev = np.array(result.eval_steps)
    epochs = np.arange(len(ev))
    markers = {"train": "o", "test": "s"}
    for f in result.frameworks:
        for which in ("train", "test"):
            acc = result.accuracy(which, f)
            ax_acc.plot(epochs, acc, color=COLORS[f], marker=markers[which], ms=4 if f == "numpy" else 7,
                        mfc=COLORS[f] if f == "numpy" else "none",
                        ls="-" if which == "train" else ":",
                        label=f"{LABELS[f]} {which} acc")
    ax_acc.set_xlabel(f"epoch ({cfg.iter_per_epoch:g} iterations)")
    ax_acc.set_ylabel("accuracy")
    ax_acc.set_title("train and test accuracy per epoch")
    ax_acc.set_ylim(0, 1.0)
    from matplotlib.ticker import MaxNLocator

    ax_acc.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax_acc.set_xlim(-0.5, max(len(ev) - 1, 1) + 0.5)
    ax_acc.legend(loc="lower right", fontsize=8)
    ax_acc.grid(alpha=0.3)

    # --- differences, log scale
    if ax_diff is not None:
        _plot_diffs(ax_diff, result, steps)
    head = title or (f"{cfg.net or 'net'} on {cfg.dataset or 'data'}: {cfg.dtype}, {cfg.mode}, "
                     f"{cfg.optimizer} lr {cfg.lr:g}, batch {cfg.batch}, seed {cfg.seed}")
    if analysis is not None and analysis.agree is not None:
        head += " - " + ("AGREE" if analysis.agree else "DISAGREE")
        if analysis.agree is False and analysis.first_step is not None:
            head += f" (first at step {analysis.first_step}, {analysis.first_tensor})"
        elif analysis.agree is False and analysis.eval_failure is not None:
            ev = analysis.eval_failure
            head += f" ({ev.get('check')} at the evaluation of step {ev.get('step')})"
    fig.suptitle(head, fontsize=11)
    # drawn in memory, then written atomically (a temp file beside it, then a rename): a
    # figure that fails half-way never leaves a broken file or clobbers the previous one
    import io

    from harness.reports import _atomic_write

    buf = io.BytesIO()
    fig.savefig(buf, format=path.suffix[1:].lower())
    _atomic_write(path, buf.getvalue())
    return path


def _plot_diffs(ax: Any, result: TrainResult, steps: np.ndarray) -> None:
    cfg = result.config
    loss = result.diffs["loss"]
    vals, zeros = _log_values(np.where(loss.recorded, loss.abs, np.nan))
    note = f" ({zeros} exact zeros not drawn)" if zeros else ""
    ax.plot(steps, vals, color="black", lw=0.6, label=f"|loss NumPy - PyTorch|{note}")
    params = [k for k in result.tensor_order if k != "loss" and not k.startswith("d")]
    if params:
        stacked = np.vstack([np.where(result.diffs[k].recorded, result.diffs[k].abs, np.nan)
                             for k in params])
        worst = np.nanmax(np.where(np.isnan(stacked), -np.inf, stacked), axis=0)
        worst = np.where(np.isfinite(worst), worst, np.nan)
        pv, pz = _log_values(worst)
        note = f" ({pz} exact zeros not drawn)" if pz else ""
        ax.plot(steps, pv, color="#2ca02c", lw=0.6, alpha=0.8,
                label=f"max |parameter NumPy - PyTorch| ({', '.join(params)}){note}")
    grads = [k for k in result.tensor_order if k.startswith("d")]
    if grads:
        stacked = np.vstack([np.where(result.diffs[k].recorded, result.diffs[k].rel, np.nan)
                             for k in grads])
        gv, _ = _log_values(np.nanmax(np.where(np.isnan(stacked), -np.inf, stacked), axis=0))
        ax.plot(steps, gv, color="#9467bd", lw=0.6, alpha=0.7,
                label="max relative |gradient NumPy - PyTorch| (/ max|grad|)")
        if result.floors:
            k = cfg.shadow_steps
            rel = []
            for g in grads:
                scale = result.diffs[g].scale
                for side in ("numpy", "torch"):
                    fl = result.floors[side][g]
                    with np.errstate(divide="ignore", invalid="ignore"):
                        rel.append(np.where(fl.recorded & (scale > 0), fl.abs / scale, np.nan))
            stacked = np.vstack(rel)[:, :k]
            fv, _ = _log_values(np.nanmax(np.where(np.isnan(stacked), -np.inf, stacked), axis=0))
            ax.plot(steps[:k], fv, color="#8c564b", lw=0.5, alpha=0.5,
                    label="noise floor: max relative |gradient f32 - f64| (either framework)")
    if result.floors:
        k = cfg.shadow_steps
        fn = result.floors["numpy"]["loss"]
        ft = result.floors["torch"]["loss"]
        nv, _ = _log_values(np.where(fn.recorded, fn.abs, np.nan)[:k])
        tv, _ = _log_values(np.where(ft.recorded, ft.abs, np.nan)[:k])
        ax.plot(steps[:k], nv, color="#1f77b4", lw=0.5, alpha=0.6,
                label="noise floor: |loss NumPy f32 - NumPy f64|")
        ax.plot(steps[:k], tv, color="#ff7f0e", lw=0.5, alpha=0.6,
                label="noise floor: |loss PyTorch f32 - PyTorch f64|")
        if k < cfg.iters:
            ax.axvline(k - 0.5, color="gray", ls=":", lw=1)
            ax.text(k, 0.98, " float64 shadows end (not judged after)", va="top", fontsize=8,
                    color="gray", transform=ax.get_xaxis_transform())
    if cfg.dtype == "float64":
        from harness.train import LOSS_ATOL_FLOAT64, float64_factor

        # the limit the run was judged by: wider from step 600 on in free mode
        limit = LOSS_ATOL_FLOAT64 * np.asarray(float64_factor(cfg.mode, steps), dtype=float)
        wide = float(limit[-1]) if limit.size else LOSS_ATOL_FLOAT64
        label = f"float64 loss limit {LOSS_ATOL_FLOAT64:g}"
        if wide != LOSS_ATOL_FLOAT64:
            first = int(np.argmax(limit != LOSS_ATOL_FLOAT64))
            label += f" ({wide:g} from step {first} on: free runs amplify rounding)"
        ax.step(steps, limit, where="post", color="red", ls="--", lw=0.8, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel("|difference| (log)")
    ax.set_title("NumPy vs PyTorch: difference per iteration"
                 + (" (lockstep: weights re-synchronised before each step)"
                    if cfg.mode == "lockstep" else " (free-running)"))
    ax.grid(alpha=0.3, which="both")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, fontsize=8,
              frameon=False)
