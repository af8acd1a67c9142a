"""The torch side of a free-mode side-by-side run in a child process (``parallel=True``).

In free mode the two sides never read each other, so the torch twin can train on its own
core while the NumPy net trains on this one. Threads do not give that for the classic net:
both libraries spend most of a small step in Python, and two threads take turns on the GIL
(docs/benchmarks.md measured every part ~40% slower). A child process has its own
interpreter.

How, on Linux (``fork``; where ``fork`` is missing the trainer runs the two sides one after
the other):

* The child is forked just before the first step. It inherits, unchanged and without a copy,
  the torch twin and its optimizer (and the float64 shadow twin), the data, and the batch
  random generator in the state the parent's is in, so it draws the same batches in the same
  order; nothing is pickled, and user-defined layers and twins work as in the parent.
* Per step the child writes what is compared (loss; gradients, parameters, as recorded; the
  same for the shadow) into one of ``SLOTS`` (8) slots of a shared anonymous memory map, in
  torch's layout, and releases the slot's ``ready`` semaphore; the parent reads the slot in
  place (``from_torch`` gives the scratch layout as a view), compares, and releases the
  slot's ``free`` semaphore. The child runs up to ``SLOTS`` steps ahead and never waits for
  the parent while the parent is faster.
* At an evaluation step the child evaluates the torch side (after releasing the step's slot)
  while the parent evaluates NumPy's; the accuracies come back through a second shared area.
* An exception in the child is sent to the parent with its traceback and raised there as
  :class:`TorchSideError` at the parent's next wait; a child that dies without a word (killed,
  crashed) is reported with its exit code. If the parent stops early (an error on the NumPy
  side, Ctrl-C), the child is killed. The child leaves with ``os._exit``: no atexit handlers,
  no second flush of the parent's buffered output.
"""

from __future__ import annotations

import mmap
import multiprocessing as mp
import os
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

SLOTS = 8
"""How many steps the child may run ahead of the parent (fewer for a big net: see
``SLOT_BUDGET``)."""
SLOT_BUDGET = 256 * 2**20
"""Bytes of shared memory for the slots; at least 2 slots whatever the net's size."""
POLL_S = 0.2
"""How often a waiting parent checks that the child is still alive."""


class TorchSideError(RuntimeError):
    """The torch side failed in the worker process; the message holds its traceback."""


def available() -> bool:
    """Whether the worker can be forked here: Linux. (macOS has ``fork``, but forking a process
    that has loaded system frameworks is unsafe there, which is why Python itself starts
    processes with ``spawn`` on macOS; Windows has no ``fork``.)"""
    return sys.platform.startswith("linux") and "fork" in mp.get_all_start_methods()


class _Layout:
    """Named arrays at fixed offsets of one shared buffer."""

    def __init__(self) -> None:
        self.fields: list[tuple[str, tuple[int, ...], np.dtype, int]] = []
        self.size = 0

    def add(self, name: str, shape: tuple[int, ...], dtype: Any) -> None:
        dt = np.dtype(dtype)
        self.size = -(-self.size // 64) * 64  # 64-byte aligned
        self.fields.append((name, tuple(shape), dt, self.size))
        self.size += int(np.prod(shape, dtype=np.int64)) * dt.itemsize

    def views(self, buf: mmap.mmap, base: int) -> dict[str, np.ndarray]:
        return {name: np.frombuffer(buf, dtype=dt, count=int(np.prod(shape, dtype=np.int64)),
                                    offset=base + off).reshape(shape)
                for name, shape, dt, off in self.fields}


class TorchProcess:
    """Runs ``step(s, out)`` for s = 0 .. iters-1 and ``evaluate(s)`` at the evaluation steps
    in a forked child; see the module docstring.

    * ``tensors``: name -> (torch-layout shape, dtype) of every array a step writes.
    * ``step(s, out)``: the torch side's step s; writes into ``out`` (name -> array of the slot)
      and returns ``(loss, shadow_loss)``.
    * ``evaluate(s)``: ``(train_acc, test_acc)`` of the torch side after step s.
    * ``timings``: a dict the child's steps add to ('torch_step', 'shadow'); the child's
      totals come back from :meth:`close`, with 'torch_eval'.
    """

    def __init__(self, iters: int, eval_at: set[int], tensors: dict[str, tuple[tuple[int, ...], Any]],
                 step: Callable[[int, dict[str, np.ndarray]], tuple[float, float]],
                 evaluate: Callable[[int], tuple[float, float]],
                 timings: dict[str, float]) -> None:
        self.iters = iters
        self.eval_at = eval_at
        layout = _Layout()
        layout.add("_scalars", (2,), np.float64)  # loss, shadow loss
        for name, (shape, dtype) in tensors.items():
            layout.add(name, shape, dtype)
        self.slot_size = -(-layout.size // 64) * 64
        self.n = n = max(2, min(SLOTS, SLOT_BUDGET // self.slot_size))
        self.buf = mmap.mmap(-1, self.slot_size * n + 64)  # anonymous, shared with the child
        self.slots = [layout.views(self.buf, k * self.slot_size) for k in range(n)]
        self.acc = np.frombuffer(self.buf, dtype=np.float64, count=2, offset=self.slot_size * n)
        ctx = mp.get_context("fork")
        self.ready = [ctx.Semaphore(0) for _ in range(n)]
        self.free = [ctx.Semaphore(1) for _ in range(n)]
        self.eval_ready = ctx.Semaphore(0)
        self.parent_conn, child_conn = ctx.Pipe(duplex=False)
        self._child_conn = child_conn
        self.timings: dict[str, float] = {}
        self._eof = False
        self._step, self._evaluate = step, evaluate
        self._child_timings = timings  # the child's copy of it goes back at the end
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        self.proc = ctx.Process(target=self._child, name="nn-parity-torch", daemon=True)
        with warnings.catch_warnings():
            # Python >= 3.12 warns when a process with threads forks (OpenBLAS's and OpenMP's
            # pools, a progress bar). The child touches none of them: it gets fresh stdio,
            # runs torch on its own thread count, and OpenBLAS and OpenMP reset their pools
            # after a fork.
            warnings.simplefilter("ignore", DeprecationWarning)
            self.proc.start()
        child_conn.close()

    # --- the child ---------------------------------------------------------------------

    def _child(self) -> None:
        conn = self._child_conn
        try:
            # Fresh stdio objects: a thread of the parent (a progress bar) may have held the
            # inherited ones' locks at the fork, and a warning written here would wait forever.
            sys.stdout = open(1, "w", buffering=1, closefd=False)  # line-buffered: os._exit
            sys.stderr = open(2, "w", buffering=1, closefd=False)  # flushes nothing
            import torch

            # One thread, always: OpenMP's pool does not survive a fork, and a second thread
            # in the child hangs in its first parallel region (measured).
            torch.set_num_threads(1)
            t_eval = 0.0
            for s in range(self.iters):
                k = s % self.n
                self.free[k].acquire()
                slot = self.slots[k]
                slot["_scalars"][:] = self._step(s, slot)
                self.ready[k].release()
                if s in self.eval_at:
                    t0 = time.perf_counter()
                    self.acc[:] = self._evaluate(s)
                    t_eval += time.perf_counter() - t0
                    self.eval_ready.release()
            spent = {k: self._child_timings.get(k, 0.0) for k in ("torch_step", "shadow")}
            conn.send(("done", spent | {"torch_eval": t_eval}))
        except BaseException as exc:  # everything goes to the parent
            try:
                conn.send(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))
            except Exception:  # the pipe is gone: the exit code tells
                pass
        finally:
            os._exit(0)

    # --- the parent --------------------------------------------------------------------

    def _wait(self, sem: Any, what: str) -> None:
        while not sem.acquire(timeout=POLL_S):
            self._check(what)

    def _check(self, what: str) -> None:
        msg = None
        if not self._eof and self.parent_conn.poll():
            try:
                msg = self.parent_conn.recv()
            except EOFError:  # the child is gone without a word
                self._eof = True
        if msg is not None and msg[0] == "error":
            self.kill()
            raise TorchSideError(f"the torch side failed at {what}: {msg[1]}\n"
                                 f"--- traceback in the torch worker process ---\n{msg[2]}")
        if msg is not None:
            self.timings.update(msg[1])
        elif self._eof or self.proc.exitcode is not None:
            self.proc.join(timeout=10)
            code = self.proc.exitcode
            self.kill()
            raise TorchSideError(f"the torch worker process ended (exit code {code}) before "
                                 f"{what}")

    def result(self, s: int) -> tuple[dict[str, np.ndarray], float, float]:
        """Step s's slot (valid until :meth:`release`), loss and shadow loss."""
        k = s % self.n
        self._wait(self.ready[k], f"step {s}")
        slot = self.slots[k]
        return slot, float(slot["_scalars"][0]), float(slot["_scalars"][1])

    def release(self, s: int) -> None:
        self.free[s % self.n].release()

    def accuracy(self, s: int) -> tuple[float, float]:
        self._wait(self.eval_ready, f"the evaluation after step {s}")
        return float(self.acc[0]), float(self.acc[1])

    def close(self) -> dict[str, float]:
        """Wait for the child's last word and its exit; its timings."""
        deadline = time.monotonic() + 60
        while not self.timings and time.monotonic() < deadline:
            if self.parent_conn.poll(POLL_S):
                self._check("the end")
            elif self.proc.exitcode is not None:
                self._check("the end")
        self.proc.join(timeout=60)
        self._cleanup()
        return self.timings

    def kill(self) -> None:
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(timeout=10)
        self._cleanup()

    def _cleanup(self) -> None:
        self.slots = []
        self.acc = None  # type: ignore[assignment]
        try:
            self.parent_conn.close()
        except OSError:
            pass
