"""Smoke tests of the bench plumbing (tiny sizes, no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

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


def test_default_workloads_run_tiny_and_report_accuracy_memory_and_ratios() -> None:
    ctx = BenchContext(iters=3, batch=10, conv_batches=2, eval_chunk=7)
    ctx.data = tiny_data()
    names = ["scratch-float32", "scratch-float64", "numpy-fused", "torch-float32",
             "side-by-side", "convnet-scratch", "convnet-torch"]
    result = run_bench(names, ctx, repeats=1)
    for n in ("scratch-float32", "scratch-float64", "numpy-fused", "torch-float32"):
        out = result.outputs[n]
        assert 0.0 <= out["test_acc"] <= 1.0 and out["evaluations"] == 1
    # same initial weights and batches: the first evaluation agrees to the image
    assert result.outputs["scratch-float32"]["test_acc"] == result.outputs["torch-float32"]["test_acc"]
    assert result.outputs["numpy-fused"]["test_acc"] == result.outputs["scratch-float32"]["test_acc"]
    steps = {p["name"]: p for p in result.training_ratios()}  # the evaluations taken out
    assert set(steps) == {"scratch-float32", "scratch-float64", "numpy-fused", "torch-float32"}
    for n, p in steps.items():
        assert 0 < p["eval_s"] < result.times[n][0] and p["steps_s"] > 0
        assert p["steps_s"] == pytest.approx(result.times[n][0] - p["eval_s"])
    assert steps["torch-float32"]["ratio"] == 1.0
    assert set(result.outputs["side-by-side"]["test_acc"]) == {"numpy", "torch"}
    ratios = {r["name"]: r for r in result.ratios()}
    assert ratios["scratch-float32 / torch-float32"]["limit"] == 0.5
    assert ratios["side-by-side / (scratch-float32 + torch-float32)"]["limit"] == 1.2
    assert ratios["convnet-scratch / convnet-torch"]["limit"] == 3.0
    assert all(result.peak_rss_mib[n] > 0 for n in names)
    assert bench._classic_flops(ctx) > 0 and bench._convnet_flops(ctx) > 0


def test_flop_counts_are_the_issue_s_arithmetic() -> None:
    ctx = BenchContext()  # the classic run: 15.98 MFLOP per step, 17 evaluations of 70,000
    assert bench._classic_flops(ctx) / 1e9 == pytest.approx(254.3, abs=0.1)
    ceiling = bench.matmul_ceiling((1, 1), shapes=((64, 64, 64),), dtypes=("float32",))
    assert ceiling["ceiling"]["float32"] > 0 and "float32 64x64x64" in ceiling["rates"]


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
    """The default workloads, nn-parity check (a child process) included."""
    js = tmp_path / "bench.json"
    rc = main(["bench", "--data-dir", str(mnist_dir), "--iters", "2", "--repeats", "1",
               "--conv-batches", "1", "--json", str(js)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "side-by-side / (scratch-float32 + torch-float32)" in out and "machine:" in out
    assert "check median" in out and "matmul rate" in out and "final test accuracy" in out
    assert "evaluations / training steps" in out
    summary = json.loads(js.read_text())["summary"]
    assert set(summary["median_s"]) == {"scratch-float32", "scratch-float64", "numpy-fused",
                                        "torch-float32",
                                        "side-by-side", "check", "convnet-scratch",
                                        "convnet-torch"}
    assert summary["machine"]["numpy"] == np.__version__
    assert {p["name"] for p in summary["training_steps"]} >= {"scratch-float32", "torch-float32"}
    assert summary["outputs"]["check"]["ok"] and summary["peak_rss_mib"]["check"] > 0
    assert summary["matmul"]["default"]["ceiling"]["float32"] > 0


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_sgd_step_is_the_scratch_step(dtype) -> None:
    """numpy-fused measures the floor of the same arithmetic: 5 of its steps give the
    weights of 5 scratch TwoLayerNet gradient + SGD steps."""
    from scratch import SGD, TwoLayerNet

    rng = np.random.default_rng(3)
    net = TwoLayerNet(784, 50, 10, dtype=dtype, weight_init_std=0.1, seed=1)
    fused = {k: v.copy() for k, v in net.params.items()}
    opt = SGD(lr=0.5)
    for _ in range(5):
        x, t = rng.random((20, 784)).astype(dtype), rng.integers(0, 10, 20)
        opt.update(net.params, net.gradient(x, t))
        bench.fused_sgd_step(x, t, fused["W1"], fused["b1"], fused["W2"], fused["b2"],
                             dtype(0.5))
    for k, v in net.params.items():
        assert not np.allclose(v, TwoLayerNet(784, 50, 10, dtype=dtype, weight_init_std=0.1,
                                              seed=1).params[k])  # the steps moved it
        np.testing.assert_allclose(fused[k], v, rtol=1e-5 if dtype == np.float32 else 1e-12,
                                   atol=1e-6 if dtype == np.float32 else 1e-14, err_msg=k)


@pytest.mark.parametrize("args, named", [
    (["--repeats", "0"], "--repeats"), (["--repeats", "1e9"], "--repeats"),
    (["--iters", "0"], "--iters"), (["--iters", "99999999999"], "--iters"),
    (["--batch", "-1"], "--batch"), (["--threads", "0"], "--threads"),
    (["--conv-batches", "0"], "--conv-batches"), (["--alone-threads", "x"], "--alone-threads"),
])
def test_bench_numbers_out_of_range_are_usage_errors(args, named, capsys) -> None:
    """Before: --repeats 0 crashed on an empty median after loading the data, --iters 0 on an
    empty list of evaluations, a huge --iters ran for hours."""
    with pytest.raises(SystemExit) as e:
        main(["bench", "--no-download", *args])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert named in err and ("between" in err or "integer" in err)


def test_a_limit_exceeded_is_said_to_be_reported_only_unless_check(mnist_dir: Path,
                                                                    capsys) -> None:
    register_workload(Workload("over-test", "exceeds its limit", lambda ctx: (lambda: None),
                               group="test", default=False, limit_s=1e-12))
    try:
        args = ["bench", "--data-dir", str(mnist_dir), "--workloads", "over-test",
                "--repeats", "1"]
        assert main(args) == 0
        out = capsys.readouterr().out
        assert "over-test median" in out and "OVER" in out
        assert "1 over its limit, reported only" in out and "--check" in out
        assert main([*args, "--check"]) == 1
        assert "reported only" not in capsys.readouterr().out
    finally:
        bench.WORKLOADS[:] = [w for w in bench.WORKLOADS if w.name != "over-test"]
