"""The classic optimizers against their torch.optim twins, step by step, in both dtypes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reference.optimizers import check_optimizer, torch_twin
from scratch import SGD, AdaGrad, Adam, Momentum, Nesterov, RMSprop

DTYPES = (np.float32, np.float64)


def assert_ok(opt, **kw):
    for dtype in DTYPES:
        report = check_optimizer(opt, dtype=dtype, **kw)
        assert report.status == "PASS", str(report)


def test_sgd(): assert_ok(SGD(lr=0.1))
def test_momentum(): assert_ok(Momentum(lr=0.1, momentum=0.9))
def test_momentum_torch_form_with_lr_schedule():
    assert_ok(Momentum(0.1, form="torch"), lr_schedule={3: 0.02, 5: 0.2})
def test_nesterov_bengio_form(): assert_ok(Nesterov(lr=0.1, form="bengio"))
def test_nesterov_torch_form_with_lr_schedule(): assert_ok(Nesterov(0.1, form="torch"), lr_schedule={3: 0.02})
def test_adagrad(): assert_ok(AdaGrad(lr=0.1))
def test_adagrad_tiny_grads(): assert_ok(AdaGrad(lr=0.1), grad_scale=1e-7)
def test_rmsprop(): assert_ok(RMSprop(lr=0.01))
def test_rmsprop_other_decay_rate(): assert_ok(RMSprop(lr=0.01, decay_rate=0.9))
def test_rmsprop_tiny_grads(): assert_ok(RMSprop(lr=0.01), grad_scale=1e-7)
def test_adam(): assert_ok(Adam(lr=0.01))
def test_adam_tiny_grads(): assert_ok(Adam(lr=0.01), grad_scale=1e-7)
def test_adam_many_steps_other_betas(): assert_ok(Adam(lr=0.01, beta1=0.8, beta2=0.99), steps=40)
def test_adam_with_lr_schedule(): assert_ok(Adam(lr=0.01), lr_schedule=lambda t: 0.01 / t)


def test_classic_defaults():
    assert SGD().lr == Momentum().lr == Nesterov().lr == AdaGrad().lr == RMSprop().lr == 0.01
    assert (Momentum().momentum, RMSprop().decay_rate, Adam().lr) == (0.9, 0.99, 0.001)
    assert (Adam().beta1, Adam().beta2) == (0.9, 0.999)
    assert AdaGrad().eps == RMSprop().eps == Adam().eps == 1e-7
    assert (Momentum().form, Nesterov().form) == ("classic", "book")


@pytest.mark.parametrize("opt", [SGD(), Momentum(), Nesterov(), AdaGrad(), RMSprop(), Adam()],
                         ids=lambda o: type(o).__name__)
def test_update_is_in_place_and_keeps_float32(opt):
    params = {"W": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)}
    arrays = dict(params)
    for _ in range(2):
        opt.update(params, {"W": np.full((2, 3), 0.5, np.float32), "b": np.ones(3, np.float32)})
    assert all(params[k] is arrays[k] and params[k].dtype == np.float32 for k in params)
    assert not np.array_equal(params["W"], np.ones((2, 3)))


def test_lr_is_an_attribute_read_at_every_step():
    opt, p = SGD(lr=0.1), {"w": np.zeros(1)}
    opt.update(p, {"w": np.ones(1)})
    opt.lr = 1.0
    opt.update(p, {"w": np.ones(1)})
    assert p["w"][0] == pytest.approx(-1.1)


def test_a_rebinding_optimizer_is_reported():
    class RebindingSGD(SGD):  # params[k] = p - lr*g: the layers never see the update
        def update(self, params, grads):
            for k in params:
                params[k] = params[k] - self.lr * grads[k]

    report = check_optimizer(RebindingSGD(0.1), lambda ps: torch.optim.SGD(ps, lr=0.1))
    assert report["params updated in place"].status == "FAIL"
    assert report["W1"].status == "PASS"  # the numbers are right, the sharing is lost


def test_twins_name_their_torch_optimizer():
    assert "nesterov=True" in torch_twin(Nesterov()).description
    assert "eps/sqrt(1-beta2**t)" in torch_twin(Adam()).description
    with pytest.raises(TypeError, match="no torch twin"):
        torch_twin(object())


# By default check_optimizer runs 20 steps with the lr dropping at step 7 (where the two
# sides stay the same optimizer under a schedule): late state bugs and a cached lr fail.
class RestartEvery10(Momentum):  # the velocity silently reset every 10 updates
    def update(self, params, grads):
        self.n = getattr(self, "n", 0) + 1
        if self.n % 10 == 0:
            self.v = {}
        super().update(params, grads)


class LrCachedOnFirstCall(Momentum):  # a later change of opt.lr (a schedule) is ignored
    def update(self, params, grads):
        self.lr0 = getattr(self, "lr0", self.lr)
        saved, self.lr = self.lr, self.lr0
        try:
            super().update(params, grads)
        finally:
            self.lr = saved


def first_failure(opt, **kw) -> str:
    r = check_optimizer(opt, **kw)
    return next(x.message for x in r.results if x.status != "PASS")


def test_a_velocity_reset_at_step_10_fails():
    assert "after step 10 of 20" in first_failure(RestartEvery10(lr=0.1))


def test_an_lr_cached_on_the_first_call_fails_at_the_schedule_step():
    assert "after step 7 of 20" in first_failure(LrCachedOnFirstCall(lr=0.1, form="torch"))


def test_the_auto_schedule_is_off_where_the_forms_differ_under_a_schedule():
    assert check_optimizer(Momentum(lr=0.1)).info["lr_schedule"] is None  # classic form
    assert check_optimizer(Adam(lr=0.01)).info["lr_schedule"] == "{7: 0.003}"
    assert check_optimizer(Adam(lr=0.01), lr_schedule=None).info["lr_schedule"] is None


def test_a_form_that_is_not_torchs_says_why_it_fails():
    assert "form='bengio' or form='torch'" in first_failure(Nesterov(lr=0.1))
    assert "only form='torch'" in first_failure(Momentum(lr=0.1), lr_schedule={5: 0.01})


class AdaGradPerShape(AdaGrad):
    """Keeps one accumulator per parameter *shape*: parameters of one shape share it."""

    def update(self, params, grads):
        for key, p in params.items():
            h = self.h.setdefault(p.shape, np.zeros_like(p))
            h += grads[key] * grads[key]
            p -= self.lr * grads[key] / (np.sqrt(h) + self.eps)


def test_state_kept_per_shape_instead_of_per_parameter_fails_with_a_note():
    for dtype in DTYPES:
        report = check_optimizer(AdaGradPerShape(lr=0.1), dtype=dtype)
        failed = {r.tensor for r in report.results if r.status == "FAIL"}
        assert failed == {"b1", "b2"}, str(report)  # the two (4,) biases of the default net
        assert "only parameters that share their shape with another fail (b1, b2 (4,))" in \
            report["b2"].message
        assert "keyed by shape or size" in report.info["note"]
