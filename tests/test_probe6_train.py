"""Side-by-side training, as a demanding user finds it: bugs that only start after the first
step, or that live in the evaluation, must still be caught and named precisely."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from harness.train import analyse, train_side_by_side
from scratch.multi_layer_net import MultiLayerNet
from scratch.normalization import BatchNormalization
from scratch.optimizers import Momentum as ScratchMomentum


def run(subset: Any, net: Any, iters: int, **kw: Any) -> tuple[Any, Any]:
    r = train_side_by_side(net, subset, iters=iters, **kw)
    return r, analyse(r)


def bn_net(cls: type, dtype: Any = np.float64, **kw: Any) -> MultiLayerNet:
    """MultiLayerNet 784-30-20-10 with BatchNorm, its BatchNorm layers replaced by ``cls``."""
    net = MultiLayerNet(784, [30, 20], 10, dtype=dtype, seed=0, use_batchnorm=True, **kw)
    for name, layer in list(net.layers.items()):
        if isinstance(layer, BatchNormalization):
            net.layers[name] = cls(layer.params["gamma"], layer.params["beta"])
    return net


class StatsStuckAfterFirstStep(BatchNormalization):
    """Running statistics updated on the first training forward only."""

    calls = 0

    def forward(self, x: np.ndarray, train_flg: bool = True) -> np.ndarray:
        kept = self.running_mean, self.running_var
        out = super().forward(x, train_flg)
        if train_flg:
            self.calls += 1
            if self.calls > 1:
                self.running_mean, self.running_var = kept
        return out


class StatsUpdatedInEval(BatchNormalization):
    """Moves its running mean towards the test batch's mean when train_flg is False."""

    def forward(self, x: np.ndarray, train_flg: bool = True) -> np.ndarray:
        out = super().forward(x, train_flg)
        if not train_flg:
            self.running_mean = 0.9 * self.running_mean + 0.1 * x.mean(axis=0)
        return out


# 3,000 training images at batch 100: an evaluation every 30 steps (0, 30, 60)


@pytest.mark.parametrize("parallel", [None, False])
def test_running_statistics_that_go_wrong_after_step_0_disagree_in_free_mode(
        subset, parallel) -> None:
    _, an = run(subset, bn_net(StatsStuckAfterFirstStep), 65, parallel=parallel)
    assert an.agree is False
    assert an.eval_failure["check"] == "running statistics"
    assert an.eval_failure["step"] == 30
    assert "BatchNorm1.running_mean after step 30 differs" in an.verdict


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_correct_batchnorm_and_dropout_agree_with_every_evaluation_replayed(subset, dtype) -> None:
    net = MultiLayerNet(784, [30, 20], 10, dtype=dtype, seed=1, use_batchnorm=True,
                        use_dropout=True, dropout_ratio=0.2)
    r, an = run(subset, net, 65)
    assert an.agree is True, an.verdict
    stats = [c for c in r.eval_checks if c.extra.get("check") == "running statistics"]
    # two BatchNorm layers x (running_mean, running_var) x evaluations 0, 30 and 60
    assert sorted({c.extra["step"] for c in stats}) == [0, 30, 60] and len(stats) == 12
    assert all(c.status == "PASS" for c in stats)


@pytest.mark.parametrize("mode", ["free", "lockstep"])
def test_a_predict_that_updates_running_statistics_is_named(subset, mode) -> None:
    _, an = run(subset, bn_net(StatsUpdatedInEval), 5, mode=mode)
    assert an.agree is False
    assert an.eval_failure["check"] == "eval state"
    assert "predict() in evaluation mode changed BatchNorm1.running_mean" in an.verdict
    assert "evaluation changes the net's state at the evaluation of step 0" in an.verdict


def test_a_figure_that_fails_half_way_leaves_the_previous_file_intact(
        subset, tmp_path, monkeypatch) -> None:
    from matplotlib.figure import Figure

    from harness.plots import plot_training

    r, an = run(subset, None, 3)
    path = tmp_path / "train.png"
    path.write_bytes(b"the previous figure")

    def broken_savefig(self: Any, fname: Any, *args: Any, **kwargs: Any) -> None:
        if hasattr(fname, "write"):
            fname.write(b"\x89PNG half")
        else:
            with open(fname, "wb") as f:
                f.write(b"\x89PNG half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(OSError, match="No space left"):
        plot_training(r, path, an)
    assert path.read_bytes() == b"the previous figure"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.png"]  # no temp file left
    monkeypatch.undo()
    plot_training(r, path, an)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_figure_title_names_a_failed_evaluation_check(subset, tmp_path, monkeypatch) -> None:
    from matplotlib.figure import Figure

    from harness.plots import plot_training

    titles: list[str] = []
    original = Figure.suptitle
    monkeypatch.setattr(Figure, "suptitle",
                        lambda self, t, **kw: titles.append(t) or original(self, t, **kw))
    r, an = run(subset, bn_net(StatsStuckAfterFirstStep), 35)
    plot_training(r, tmp_path / "t.svg", an)
    assert titles[-1].endswith("DISAGREE (running statistics at the evaluation of step 30)")


class BookDropout:  # the book's Dropout: its own mask, no scratch base class
    def __init__(self, dropout_ratio: float = 0.5) -> None:
        self.dropout_ratio, self.mask = dropout_ratio, None

    def forward(self, x: np.ndarray, train_flg: bool = True) -> np.ndarray:
        if train_flg:
            self.mask = np.random.rand(*x.shape) > self.dropout_ratio  # noqa: NPY002
            return x * self.mask
        return x * (1.0 - self.dropout_ratio)

    def backward(self, dout: np.ndarray) -> np.ndarray:
        return dout * self.mask


BookDropout.__name__ = BookDropout.__qualname__ = "Dropout"


def test_a_book_style_dropout_in_a_net_says_to_subclass_scratchs(subset) -> None:
    net = MultiLayerNet(784, [20], 10, seed=0)
    net.layers["Dropout1"] = BookDropout(0.3)
    net.layers.move_to_end("Affine2")
    with pytest.raises(LookupError, match=r"no PyTorch twin registered for layer Dropout: a "
                       r"Dropout written the book's way is not matched by its name .* from "
                       r"scratch\.normalization import Dropout"):
        train_side_by_side(net, subset, iters=2)


class Adam:  # the book's Adam, as written: no base class, matched by its name
    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999) -> None:
        self.lr, self.beta1, self.beta2 = lr, beta1, beta2
        self.iter = 0
        self.m: dict[str, np.ndarray] | None = None
        self.v: dict[str, np.ndarray] | None = None

    def lr_t(self) -> float:
        return self.lr * np.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        if self.m is None or self.v is None:
            self.m = {k: np.zeros_like(v) for k, v in params.items()}
            self.v = {k: np.zeros_like(v) for k, v in params.items()}
        self.iter += 1
        lr_t = self.lr_t()
        for key in params:
            self.m[key] += (1 - self.beta1) * (grads[key] - self.m[key])
            self.v[key] += (1 - self.beta2) * (grads[key] ** 2 - self.v[key])
            params[key] -= lr_t * self.m[key] / (np.sqrt(self.v[key]) + 1e-7)


class AdamCorrectedOnce(Adam):
    """Forgets the bias correction after the first step."""

    def lr_t(self) -> float:
        return super().lr_t() if self.iter == 1 else self.lr


class Stepper:  # no twin: not named like a classic optimizer, not registered
    lr = 0.1

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        for key in params:
            params[key] -= self.lr * grads[key]


def small_net(dtype: Any) -> MultiLayerNet:
    return MultiLayerNet(784, [20, 20], 10, dtype=dtype, seed=0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_an_optimizer_written_the_books_way_trains_side_by_side(subset, dtype) -> None:
    r, an = run(subset, small_net, 12, optimizer=Adam(), dtype=dtype)
    assert an.agree is True and r.config.optimizer == "Adam", an.verdict
    r, an = run(subset, small_net, 12, optimizer=AdamCorrectedOnce(), dtype=dtype)
    assert an.agree is False and an.first_step == 1, an.verdict


def test_a_registered_optimizer_trains_side_by_side(subset) -> None:
    import torch

    from reference.optimizers import _OPTIMIZER_REGISTRY, register_optimizer

    register_optimizer(Stepper, lambda opt, ps: torch.optim.SGD(ps, lr=opt.lr))
    try:
        _, an = run(subset, small_net, 6, optimizer=Stepper())
        assert an.agree is True, an.verdict
    finally:
        _OPTIMIZER_REGISTRY.pop(Stepper, None)
    with pytest.raises(TypeError, match=r"optimizer Stepper: its torch twin is unknown: .*"
                       r"register_optimizer"):
        run(subset, small_net, 2, optimizer=Stepper())


class OwnForwardPass(MultiLayerNet):
    """A gradient() that runs its own forward pass instead of calling self.loss (so the
    trainer computes the recorded loss itself), with a loss() of either default mode."""

    loss_in_training_mode = False

    def loss(self, x: np.ndarray, t: np.ndarray, train_flg: bool | None = None) -> Any:
        flag = self.loss_in_training_mode if train_flg is None else train_flg
        return super().loss(x, t, flag)

    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        self.last_layer.forward(self.predict(x, train_flg=True), t)
        dout = self.last_layer.backward(1.0)
        for layer in reversed(self.layers.values()):
            dout = layer.backward(dout)
        grads = {}
        for key, p in self.params.items():
            layer = next(v for v in self.layers.values()
                         if any(q is p for q in getattr(v, "params", {}).values()))
            grads[key] = next(layer.grads[n] for n, q in layer.params.items() if q is p)
        return grads


@pytest.mark.parametrize("training_mode", [False, True])
@pytest.mark.parametrize("mode", ["free", "lockstep"])
def test_the_recorded_loss_of_a_net_without_self_loss_is_the_training_pass_and_has_no_side_effects(
        subset, mode, training_mode) -> None:
    def make(dtype: Any) -> OwnForwardPass:
        net = OwnForwardPass(784, [30, 20], 10, dtype=dtype, seed=0, use_batchnorm=True,
                             use_dropout=True, dropout_ratio=0.2)
        net.loss_in_training_mode = training_mode
        return net

    r, an = run(subset, make, 35, mode=mode)
    assert an.agree is True, an.verdict  # was: a loss in evaluation mode, running stats twice
    assert any(c.extra.get("check") == "running statistics" and c.extra["step"] == 30
               for c in r.eval_checks)


@pytest.mark.parametrize("mode", ["free", "lockstep"])
def test_the_plotted_float64_loss_limit_is_the_one_the_run_was_judged_by(
        subset, tmp_path, monkeypatch, mode) -> None:
    from matplotlib.axes import Axes

    from harness.plots import plot_training
    from harness.train import FLOAT64_FREE_STRICT_STEPS, LOSS_ATOL_FLOAT64, float64_limit

    r, an = run(subset, lambda d: MultiLayerNet(784, [10], 10, dtype=d, seed=0),
                FLOAT64_FREE_STRICT_STEPS + 5, mode=mode, record_param_diff=False)
    drawn: dict[str, np.ndarray] = {}
    original = Axes.step

    def step(self: Any, x: Any, y: Any, *args: Any, **kw: Any) -> Any:
        drawn[kw.get("label", "")] = np.asarray(y)
        return original(self, x, y, *args, **kw)

    monkeypatch.setattr(Axes, "step", step)
    plot_training(r, tmp_path / "t.png", an)
    (label, limit), = ((k, v) for k, v in drawn.items() if "loss limit" in k)
    s = FLOAT64_FREE_STRICT_STEPS
    judged = [float64_limit("loss", 1.0, 1.0) * (1000.0 if mode == "free" and i >= s else 1.0)
              for i in (s - 1, s)]
    assert [limit[s - 1], limit[s]] == pytest.approx(judged)
    assert limit[0] == LOSS_ATOL_FLOAT64
    assert (f"from step {s} on" in label) == (mode == "free")


def test_the_books_nesterov_form_is_told_apart_from_a_bug(subset) -> None:
    from scratch.optimizers import Nesterov

    _, an = run(subset, small_net, 5, optimizer=Nesterov(lr=0.01))  # form='book', the default
    assert an.agree is False and an.first_step == 0
    assert an.hint is not None and "Nesterov in the book's form (form='book')" in an.hint
    assert "HINT: the optimizer is Nesterov in the book's form" in an.verdict
    _, an = run(subset, small_net, 5, optimizer=Nesterov(lr=0.01, form="bengio"))
    assert an.agree is True and an.hint is None, an.verdict


class CountsCopies:
    copies = 0

    def __deepcopy__(self, memo: dict[int, Any]) -> CountsCopies:
        CountsCopies.copies += 1
        return self


def test_the_replay_copies_only_what_the_twin_is_built_from(subset) -> None:
    net = MultiLayerNet(784, [20], 10, seed=0, use_batchnorm=True)
    net.training_data = CountsCopies()  # say, the data set kept on the net: 60,000 images
    CountsCopies.copies = 0
    _, an = run(subset, net, 35)
    assert an.agree is True, an.verdict
    assert CountsCopies.copies == 0


class ClassStateMomentum:  # the velocity on the class: every instance shares it
    v: dict[str, np.ndarray] = {}  # noqa: RUF012  (the bug under test)

    def __init__(self, lr: float = 0.01, momentum: float = 0.9) -> None:
        self.lr, self.momentum = lr, momentum

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        for key in params:
            v = self.v.setdefault(key, np.zeros_like(params[key]))
            self.v[key] = self.momentum * v - self.lr * grads[key]
            params[key] += self.v[key]


ClassStateMomentum.__name__ = ClassStateMomentum.__qualname__ = "Momentum"


def test_optimizer_state_kept_on_the_class_is_named(subset) -> None:
    from reference.optimizers import check_optimizer
    from scratch.optimizers import Momentum

    ClassStateMomentum.v.clear()
    like = Momentum(lr=0.1)
    check_optimizer(ClassStateMomentum(lr=0.1), like=like)  # leaves its state behind
    report = check_optimizer(ClassStateMomentum(lr=0.1), like=like)
    assert not report.ok
    assert "the state is kept on the class (Momentum.v, a class attribute" in \
        report["W1"].message
    for dtype in (np.float64, np.float32):  # left behind, or empty at the start
        with pytest.raises(ValueError, match=r"Momentum.update\(\) (keeps its state on the "
                           r"class \(Momentum\.v|.* its class holds Momentum\.v \(6 entries)"):
            run(subset, small_net, 2, optimizer=ClassStateMomentum(), dtype=dtype)
        ClassStateMomentum.v.clear()
    with pytest.raises(ValueError, match=r"Momentum.update\(\) keeps its state on the class "
                       r"\(Momentum\.v, a class attribute\)"):
        run(subset, small_net, 2, optimizer=ClassStateMomentum(), dtype=np.float32)
    ClassStateMomentum.v.clear()


class ConstantsOnTheClass(ScratchMomentum):
    DEFAULTS = {"lr": 0.01, "momentum": 0.9}  # noqa: RUF012  (a constant, not state)


def test_a_constant_dict_on_the_class_is_not_state(subset) -> None:
    _, an = run(subset, small_net, 3, optimizer=ConstantsOnTheClass(lr=0.01))
    assert an.agree is True, an.verdict


def test_the_numerical_gradient_divides_by_the_step_actually_taken() -> None:
    from scratch.gradient import numerical_gradient

    x = np.array([0.3, -1000.0, 12345.678], dtype=np.float32)
    exact = 2 * x.astype(np.float64)
    g = numerical_gradient(lambda v: float(np.sum(v.astype(np.float64) ** 2)), x)
    # float32 rounds x + h: 2h was 22% off the real step at 1000, and h vanished at 12345
    np.testing.assert_allclose(g, exact, rtol=1e-6)
    assert x.tolist() == np.array([0.3, -1000.0, 12345.678], dtype=np.float32).tolist()
    x64 = np.array([0.3, -2.0])
    np.testing.assert_allclose(numerical_gradient(lambda v: float(np.sum(v ** 3)), x64),
                               3 * x64 ** 2, rtol=1e-7)


class WritesIntoItsInput(MultiLayerNet):
    def predict(self, x: np.ndarray, train_flg: bool = False) -> np.ndarray:
        x[:, :10] = 0.5  # changes the caller's array
        return super().predict(x, train_flg)


def test_a_predict_that_writes_into_its_input_never_changes_the_data_set(subset) -> None:
    from types import SimpleNamespace

    data = SimpleNamespace(**{k: getattr(subset, k).copy()
                              for k in ("x_train", "t_train", "x_test", "t_test")})
    before = {k: v.copy() for k, v in vars(data).items()}
    with pytest.raises(RuntimeError, match=r"predict\(\) writes into its input x"):
        run(data, lambda d: WritesIntoItsInput(784, [20], 10, dtype=d, seed=0), 3,
            dtype=np.float32)
    assert all(np.array_equal(v, before[k]) for k, v in vars(data).items())


class ClearsItsBatchAfterUse(MultiLayerNet):
    def gradient(self, x: np.ndarray, t: np.ndarray) -> dict[str, np.ndarray]:
        grads = super().gradient(x, t)
        x[...] = 0  # after use: the step is right, the caller's batch is gone
        return grads


def test_the_replay_uses_the_batch_as_it_was_before_the_step(subset) -> None:
    _, an = run(subset, lambda d: ClearsItsBatchAfterUse(784, [20], 10, dtype=d, seed=0,
                                                         use_batchnorm=True), 3,
                parallel=False)
    assert an.agree is True, an.verdict


class NudgesAWeightInPredict(MultiLayerNet):
    def predict(self, x: np.ndarray, train_flg: bool = False) -> np.ndarray:
        out = super().predict(x, train_flg)
        if not train_flg:
            self.params["b1"][0] += 1.0  # a weight written at test time
        return out


def test_a_predict_that_changes_a_weight_is_named_without_the_batchnorm_hint(subset) -> None:
    _, an = run(subset, lambda d: NudgesAWeightInPredict(784, [20], 10, dtype=d, seed=0), 1)
    assert an.agree is False and an.eval_failure is not None
    msg = an.eval_failure["message"]
    assert "predict() in evaluation mode changed b1 (1 of 20 values, greatest change 1 at " \
        "index (0,)): evaluation must leave the weights as they are" in msg, msg
    assert "BatchNorm" not in msg


@pytest.mark.parametrize("batch, next_eval", [("100", 601), ("128", 1876)])
def test_a_run_shorter_than_an_epoch_says_its_accuracies_are_of_the_untrained_net(
        mnist_dir, capsys, batch: str, next_eval: int) -> None:
    """--iters 30: the only evaluation is the classic one at step 0; the table's 'test acc
    (step 0)' read as the final accuracy of the run. The hint gives the first --iters with an
    evaluation after training, for a fractional epoch too (60000 / 128 = 468.75 steps:
    step % 468.75 == 0 first at 1875)."""
    from harness.cli import main

    assert main(["train", "--data-dir", str(mnist_dir), "--iters", "30", "--batch", batch,
                 "--frameworks", "numpy"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "the accuracies are of the untrained net" in out
    assert f"--iters {next_eval} or more gives one after training" in out


def test_a_net_built_for_another_input_size_is_named_before_training(subset) -> None:
    """TwoLayerNet(100, 50, 10) on MNIST: a raw 'matmul: Input operand 1 has a mismatch in its
    core dimension' from inside the first step."""
    from scratch import TwoLayerNet

    with pytest.raises(ValueError, match=r"TwoLayerNet.predict\(\) cannot take the data.*"
                                         r"first weight is W1 \(100, 50\)"):
        train_side_by_side(TwoLayerNet(100, 50, 10), subset, iters=3)
