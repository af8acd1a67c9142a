"""Smoke tests of the bench plumbing (tiny sizes, no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from harness import bench
from harness.bench import BenchContext, Ratio, Workload, register_ratio, register_workload, run_bench
from harness.cli import main


def tiny_data() -> SimpleNamespace:
    rng = np.random.default_rng(0)
    return SimpleNamespace(name="synthetic", source="memory",
                           x_train=rng.random((200, 784), dtype=np.float32),
                           t_train=rng.integers(0, 10, 200),
                           x_test=rng.random((50, 784), dtype=np.float32),
                           t_test=rng.integers(0, 10, 50))


def test_run_bench_interleaves_and_computes_ratios() -> None:
    ctx = BenchContext(iters=3, batch=10)
    ctx.data = tiny_data()
    order: list[str] = []
    result = run_bench(["numpy", "torch", "side-by-side"], ctx, repeats=2,
                       progress=lambda name, r, dt: order.append(name))
    assert order == ["numpy", "torch", "side-by-side"] * 2  # A B C A B C
    assert all(len(v) == 2 and all(t > 0 for t in v) for v in result.times.values())
    names = {r["name"]: r for r in result.ratios()}
    main_ratio = names["side-by-side / (numpy + torch)"]
    assert main_ratio["limit"] == 1.3 and main_ratio["value"] > 0
    assert "cpu" in result.machine and result.machine["cores"]


def test_registered_workloads_and_ratios_join_the_run() -> None:
    calls: list[int] = []

    def setup(ctx: BenchContext):
        return lambda: calls.append(ctx.iters)

    register_workload(Workload("noop-test", "does nothing", setup, group="test", default=False,
                               flops=lambda ctx: 1e6))
    register_ratio(Ratio("noop-test / numpy", "noop-test", ("numpy",)))
    try:
        ctx = BenchContext(iters=2, batch=10)
        ctx.data = tiny_data()
        result = run_bench(["noop-test", "numpy"], ctx, repeats=1)
        assert calls == [2]
        assert any(r["name"] == "noop-test / numpy" for r in result.ratios())
    finally:
        bench.WORKLOADS[:] = [w for w in bench.WORKLOADS if w.name != "noop-test"]
        bench.RATIOS[:] = [r for r in bench.RATIOS if r.name != "noop-test / numpy"]


def test_bench_cli_smoke(mnist_dir: Path, tmp_path: Path, capsys) -> None:
    js = tmp_path / "bench.json"
    rc = main(["bench", "--data-dir", str(mnist_dir), "--iters", "2", "--repeats", "1",
               "--json", str(js)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "side-by-side / (numpy + torch)" in out and "machine:" in out
    summary = json.loads(js.read_text())["summary"]
    assert set(summary["median_s"]) == {"numpy", "torch", "side-by-side"}
    assert summary["machine"]["numpy"] == np.__version__
