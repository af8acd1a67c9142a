"""Thread pools of NumPy's BLAS and of PyTorch, and why side-by-side training limits both.

The trainer alternates NumPy (OpenBLAS, its own pthread pool) and PyTorch (an OpenMP team for
its kernels and MKL) step by step in one process. On a small machine the two pools fight: an
OpenMP worker busy-waits (spins) after each parallel region, on the core an OpenBLAS worker
needs, and OpenBLAS workers wait on a core that a spinning OpenMP thread holds. Measured on
the 2-core development machine (docs/benchmarks.md): 2,000 float64 side-by-side steps of the
784-50-10 net took 32.8 s with both libraries' default threads, 6.4 s with
``OMP_WAIT_POLICY=PASSIVE`` and 6.3 s with one thread each. The matrices of one step
(100 x 784 x 50) are too small for a second thread to pay off anyway.

So wherever the harness interleaves the two libraries it limits both to one thread
(:func:`limit_threads`), which needs no environment variable and works whatever was imported
first:

* the trainer's step loop (``harness.train``); its evaluations run one framework at a time,
  each with its library's own thread count (their large products use both cores);
* ``check_layer``, ``check_net`` and every case of ``nn-parity check`` (tiny tensors: one
  thread is faster anyway; with the default threads the check took 11-29 s on the loaded
  machine instead of 6.5-10 s).

How:

* PyTorch: ``torch.set_num_threads(n)`` (covers its OpenMP team and MKL).
* NumPy: the BLAS library that NumPy loaded, found in ``/proc/self/maps`` (Linux) or
  NumPy's ``numpy.libs`` folder, is called through ``ctypes``: ``openblas_set_num_threads``
  under each name OpenBLAS builds export (``scipy_openblas_set_num_threads64_`` for NumPy's
  own wheels), or ``MKL_Set_Num_Threads``. No extra dependency (threadpoolctl would do the
  same; it is not needed). Switching costs ~5 us.

:data:`OMP_ENV` (``OMP_WAIT_POLICY=PASSIVE``) is *not* set by the harness: measured here it
makes PyTorch alone with its default 2 threads about 2x slower (the classic experiment:
7.5-9.4 s -> 15.6-15.9 s; each parallel region must wake a sleeping thread), which would
slow down a user's own PyTorch code in the same process, while :func:`limit_threads` already
removes the fight. :func:`set_early_env` still puts it into the environment on request; it
only works before PyTorch loads its OpenMP runtime (before ``import torch``).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

OMP_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}

_SET_NAMES = (
    "scipy_openblas_set_num_threads64_",
    "scipy_openblas_set_num_threads",
    "openblas_set_num_threads64_",
    "openblas_set_num_threads",
    "MKL_Set_Num_Threads",
)
_GET_NAMES = (
    "scipy_openblas_get_num_threads64_",
    "scipy_openblas_get_num_threads",
    "openblas_get_num_threads64_",
    "openblas_get_num_threads",
    "MKL_Get_Max_Threads",
)


def set_early_env() -> bool:
    """Put :data:`OMP_ENV` into ``os.environ`` (without overriding the user's values) if torch
    has not been imported yet; return whether it can still take effect. Not called by the
    harness (see the module docstring)."""
    if "torch" in sys.modules:
        return False
    for k, v in OMP_ENV.items():
        os.environ.setdefault(k, v)
    return True


@dataclass
class BlasHandle:
    """One BLAS library loaded in this process, with its thread setter and getter."""

    path: str
    set_name: str
    get_name: str | None
    lib: Any = field(repr=False, default=None)

    def get(self) -> int | None:
        if self.get_name is None:
            return None
        try:
            return int(getattr(self.lib, self.get_name)())
        except Exception:  # pragma: no cover - exotic builds
            return None

    def set(self, n: int) -> None:
        getattr(self.lib, self.set_name)(ctypes.c_int(int(n)))

    def corename(self) -> str | None:
        """OpenBLAS's kernel chosen at run time (e.g. 'SkylakeX'), or None."""
        for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename",
                     "openblas_get_corename64_", "openblas_get_corename"):
            fn = getattr(self.lib, name, None)
            if fn is not None:
                fn.restype = ctypes.c_char_p
                value = fn()
                return value.decode() if value else None
        return None


def _candidate_paths() -> list[str]:
    paths: list[str] = []
    try:
        maps = Path("/proc/self/maps").read_text()
        paths = sorted(set(re.findall(r"(/\S*(?:openblas|libblas|mkl_rt)\S*\.so[\w.]*)", maps)))
    except OSError:
        pass
    if not paths:
        import numpy as np

        libs = Path(np.__file__).parent.parent / "numpy.libs"
        if libs.is_dir():
            paths = sorted(str(p) for p in libs.glob("*openblas*"))
    return paths


_HANDLES: list[BlasHandle] | None = None


def blas_handles() -> list[BlasHandle]:
    """The BLAS libraries NumPy loaded that expose a thread setter (cached)."""
    global _HANDLES
    if _HANDLES is None:
        import numpy  # noqa: F401  (make sure NumPy's BLAS is loaded)

        handles: list[BlasHandle] = []
        for path in _candidate_paths():
            try:
                lib = ctypes.CDLL(path)
            except OSError:
                continue
            set_name = next((n for n in _SET_NAMES if hasattr(lib, n)), None)
            if set_name is None:
                continue
            get_name = next((n for n in _GET_NAMES if hasattr(lib, n)), None)
            handles.append(BlasHandle(path, set_name, get_name, lib))
        _HANDLES = handles
    return _HANDLES


def numpy_threads() -> int | None:
    """The thread count of NumPy's BLAS, or None if it cannot be read."""
    for h in blas_handles():
        n = h.get()
        if n is not None:
            return n
    return None


def set_numpy_threads(n: int) -> bool:
    """Set NumPy's BLAS thread count; False if no BLAS with a known setter was found."""
    handles = blas_handles()
    for h in handles:
        h.set(n)
    return bool(handles)


def torch_threads() -> int:
    import torch

    return int(torch.get_num_threads())


@contextlib.contextmanager
def limit_threads(numpy: int | None = 1, torch: int | None = 1) -> Iterator[dict[str, Any]]:
    """Run the body with NumPy's BLAS and PyTorch limited to the given thread counts
    (``None`` leaves one alone), then restore the previous counts. Yields a description."""
    import torch as _torch

    info: dict[str, Any] = {"numpy_threads": None, "torch_threads": None,
                            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    old_np, old_t = numpy_threads(), _torch.get_num_threads()
    try:
        if numpy is not None and set_numpy_threads(numpy):
            info["numpy_threads"] = numpy
        else:
            info["numpy_threads"] = old_np
        if torch is not None:
            _torch.set_num_threads(int(torch))
        info["torch_threads"] = _torch.get_num_threads()
        yield info
    finally:
        if numpy is not None and old_np is not None:
            set_numpy_threads(old_np)
        if torch is not None:
            _torch.set_num_threads(old_t)


def describe() -> dict[str, Any]:
    """Thread settings and libraries, for reports and docs/benchmarks.md."""
    import numpy as np
    import torch

    blas = blas_handles()
    return {
        "numpy": np.__version__,
        "torch": torch.__version__,
        "numpy_blas": [Path(h.path).name for h in blas] or ["unknown"],
        "numpy_blas_core": next((c for c in (h.corename() for h in blas) if c), None),
        "numpy_blas_threads": numpy_threads(),
        "torch_threads": torch.get_num_threads(),
        "torch_parallel_backend": _torch_backend(torch),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "cpu_count": os.cpu_count(),
    }


def _torch_backend(torch: Any) -> str:
    try:
        info = torch.__config__.parallel_info()
    except Exception:  # pragma: no cover
        return "unknown"
    m = re.search(r"ATen parallel backend: (.*)", info)
    return m.group(1).strip() if m else "unknown"
