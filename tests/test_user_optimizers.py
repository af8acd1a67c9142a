"""A user's own optimizers: ``nn-parity check --module`` and the pytest plugin find them
(registered, subclassing a scratch optimizer, or named like a classic one) and check them
against torch.optim; realistic bugs fail, each in the run that shows it."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.check import CheckError
from harness.cli import main
from harness.compare import ERROR
from harness.pytest_plugin import ParityError, assert_parity, parity_cases
from harness.user_modules import forget_user_modules, import_user_module
from harness.user_optimizers import discover_optimizers, optimizer_spec
from reference.optimizers import register_optimizer, unregister_optimizer

REPO = Path(__file__).resolve().parents[1]
FAST = ["--seeds", "1", "--batches", "3"]


@pytest.fixture(autouse=True)
def _forget():
    yield
    forget_user_modules()


def write(tmp_path: Path, body: str, name: str = "my_opt.py") -> Path:
    path = tmp_path / name
    path.write_text("import numpy as np\nimport scratch\n" + textwrap.dedent(body))
    return path


def run(path: Path, tmp_path: Path, *extra: str) -> tuple[int, dict]:
    out = tmp_path / "out.json"
    code = main(["check", "--module", str(path), *FAST, "-q", "--json", str(out), *extra])
    return code, json.loads(out.read_text())


def failed(summary: dict) -> set[str]:
    return {r["component"] for r in summary["summary"]["rows"] if r["status"] != "PASS"}


# ---------------------------------------------------------------------------------------
# The example and discovery


def test_example_module_passes_with_notes(tmp_path: Path) -> None:
    code, js = run(REPO / "examples" / "user_optimizers.py", tmp_path)
    assert code == 0
    names = {r["component"] for r in js["summary"]["rows"]}
    assert {"user_optimizers.Adam", "user_optimizers.Adam (300 steps)",
            "user_optimizers.Adam (grads ~1e-07)", "user_optimizers.AdamW",
            "user_optimizers.SGD (300 steps)"} <= names
    assert "user_optimizers.SGD (grads ~1e-07)" not in names  # no eps: no small-grad run
    notes = js["summary"]["notes"]
    assert "matched by its class name" in notes["user_optimizers.Adam"][0]
    assert "eps=1e-07 (no eps attribute" in notes["user_optimizers.AdaGrad"][0]
    assert "user_optimizers.AdamW" not in notes  # registered: its own twin, nothing assumed


def test_discovery_kinds_and_classes_without_a_twin(tmp_path: Path) -> None:
    path = write(tmp_path, """
        import torch
        from reference import register_optimizer
        class MyAdam(scratch.Adam): pass
        class RMSpropOptimizer:
            def __init__(self, lr=0.01): self.lr = lr
            def update(self, params, grads): pass
        class Lion:
            def update(self, params, grads): pass
        class Sophia:
            def __init__(self, lr=0.1): self.lr = lr
            def update(self, params, grads): pass
        register_optimizer(Sophia, lambda opt, ps: torch.optim.SGD(ps, lr=opt.lr))
        class Relu(scratch.Relu): pass   # a layer, not an optimizer
        class Trainer:
            def update(self): pass   # no (params, grads): not an optimizer
    """)
    specs, no_twin = discover_optimizers(import_user_module(str(path)))
    assert [(s.name, s.how) for s in specs] == [
        ("my_opt.MyAdam", "subclass of Adam"), ("my_opt.RMSpropOptimizer", "matched by its class name"),
        ("my_opt.Sophia", "registered")]
    assert no_twin == ["my_opt.Lion"]


def test_a_module_with_only_untwinned_optimizers_is_an_error(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, """
        class Lion:
            def update(self, params, grads): pass
    """)
    assert main(["check", "--module", str(path), *FAST]) == 2
    err = capsys.readouterr().err
    assert "my_opt.Lion" in err and "register_optimizer" in err


def test_untwinned_optimizer_beside_checked_ones_is_a_note(tmp_path: Path) -> None:
    path = write(tmp_path, """
        class SGD:
            def __init__(self, lr=0.01): self.lr = lr
            def update(self, params, grads):
                for k in params: params[k] -= self.lr * grads[k]
        class Lion:
            def update(self, params, grads): pass
    """)
    code, js = run(path, tmp_path)
    assert code == 0
    assert "no PyTorch twin" in js["summary"]["notes"]["my_opt.Lion"][0]


# ---------------------------------------------------------------------------------------
# Correct optimizers in other styles pass


CORRECT = {
    "required lr, no defaults": """
        class Momentum:
            def __init__(self, lr, momentum):
                self.lr, self.momentum, self.v = lr, momentum, {}
            def update(self, params, grads):
                for k, p in params.items():
                    self.v[k] = self.momentum * self.v.get(k, 0) - self.lr * grads[k]
                    p += self.v[k]
    """,
    "torch-form Adam with eps=1e-8": """
        class Adam:
            def __init__(self, lr=0.001, beta1=0.9, beta2=0.999, eps=1e-8):
                self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
                self.t, self.m, self.v = 0, {}, {}
            def update(self, params, grads):
                self.t += 1
                for k, p in params.items():
                    m = self.m.setdefault(k, np.zeros_like(p))
                    v = self.v.setdefault(k, np.zeros_like(p))
                    m[...] = self.beta1 * m + (1 - self.beta1) * grads[k]
                    v[...] = self.beta2 * v + (1 - self.beta2) * grads[k] ** 2
                    m_hat, v_hat = m / (1 - self.beta1 ** self.t), v / (1 - self.beta2 ** self.t)
                    p -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
    """,
    "subclass with other defaults": """
        class FastRMSprop(scratch.RMSprop):
            def __init__(self, lr=0.05, decay_rate=0.9):
                super().__init__(lr, decay_rate)
    """,
}


@pytest.mark.parametrize("source", CORRECT.values(), ids=CORRECT.keys())
def test_correct_optimizers_pass(source: str, tmp_path: Path) -> None:
    code, js = run(write(tmp_path, source), tmp_path)
    assert code == 0, failed(js)


def test_torch_form_adam_says_which_form_it_matched(tmp_path: Path) -> None:
    code, js = run(write(tmp_path, CORRECT["torch-form Adam with eps=1e-8"]), tmp_path)
    assert code == 0
    assert any("the form of torch.optim.Adam" in n for n in js["summary"]["notes"]["my_opt.Adam"])


# ---------------------------------------------------------------------------------------
# Realistic bugs fail, in the run that shows them

ADAM = """
    class Adam:
        def __init__(self, lr=0.001, beta1=0.9, beta2=0.999):
            self.lr, self.beta1, self.beta2 = lr, beta1, beta2
            self.iter, self.m, self.v = {iter0}, None, None
        def update(self, params, grads):
            if self.m is None:
                self.m = {{k: np.zeros_like(v) for k, v in params.items()}}
                self.v = {{k: np.zeros_like(v) for k, v in params.items()}}
            {before}
            t = int(self.iter)
            lr_t = self.lr * np.sqrt(1.0 - self.beta2 ** t) / (1.0 - self.beta1 ** t)
            {after}
            for k in params:
                self.m[k] += (1 - self.beta1) * (grads[k] - self.m[k])
                self.v[k] += (1 - self.beta2) * (grads[k] ** 2 - self.v[k])
                params[k] -= lr_t * self.m[k] / (np.sqrt(self.v[k]) + 1e-7)
"""
ADAGRAD = """
    class AdaGrad:
        def __init__(self, lr=0.01):
            self.lr, self.h = lr, None
        def update(self, params, grads):
            if self.h is None:
                self.h = {{k: np.zeros_like(v) for k, v in params.items()}}
            for k in params:
                self.h[k] += grads[k] * grads[k]
                params[k] -= {step}
"""
SGD = """
    class SGD:
        def __init__(self, lr=0.01):
            self.lr = lr
        def update(self, params, grads):
            {body}
"""

BUGS = {
    # name: (source, the components that must fail, the ones that must pass)
    "uint8 step counter": (ADAM.format(iter0="np.uint8(0)", before="self.iter += np.uint8(1)",
                                       after=""),
                           {"my_opt.Adam (300 steps)"}, {"my_opt.Adam"}),
    "step counted after the bias correction": (
        ADAM.format(iter0="0", before="", after="self.iter += 1"), {"my_opt.Adam"}, set()),
    "eps inside the square root": (
        ADAGRAD.format(step="self.lr * grads[k] / np.sqrt(self.h[k] + 1e-7)"),
        {"my_opt.AdaGrad (grads ~1e-07)"}, set()),
    "eps added after the lr": (
        ADAGRAD.format(step="self.lr * grads[k] / np.sqrt(self.h[k]) + 1e-7"),
        {"my_opt.AdaGrad"}, set()),
    "new arrays instead of in place": (
        SGD.format(body="for k in params: params[k] = params[k] - self.lr * grads[k]"),
        {"my_opt.SGD"}, set()),
    "lr read once": (
        SGD.format(body="self.lr0 = getattr(self, 'lr0', self.lr)\n"
                        "            for k in params: params[k] -= self.lr0 * grads[k]"),
        {"my_opt.SGD"}, set()),
    "momentum forgotten in the velocity": (
        """
        class Momentum:
            def __init__(self, lr=0.01, momentum=0.9):
                self.lr, self.momentum, self.v = lr, momentum, {}
            def update(self, params, grads):
                for k, p in params.items():
                    self.v[k] = self.v.get(k, 0) - self.lr * grads[k]
                    p += self.v[k]
        """, {"my_opt.Momentum"}, set()),
}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the uint8 counter overflows
@pytest.mark.parametrize("bug", BUGS, ids=BUGS.keys())
def test_buggy_optimizers_fail_in_the_run_that_shows_them(bug: str, tmp_path: Path) -> None:
    source, must_fail, must_pass = BUGS[bug]
    code, js = run(write(tmp_path, source), tmp_path)
    assert code == 1
    assert must_fail <= failed(js)
    assert not (must_pass & failed(js))


def test_an_update_that_raises_is_an_error_row_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, SGD.format(body="for k in params: params[k] -= self.lr * grads[k + '_']"))
    code, js = run(path, tmp_path)
    assert code != 0
    rows = [r for r in js["layers"] if r["layer"] == "my_opt.SGD"]
    res = rows[0]["results"][0]
    assert res["status"] == ERROR and "KeyError" in res["message"]
    assert f"{path}:" in res["message"] and "in update" in res["message"]


# ---------------------------------------------------------------------------------------
# Registration and the pytest plugin


def test_register_optimizer_rejects_the_torch_class_itself() -> None:
    class Opt:
        def update(self, params, grads): ...

    with pytest.raises(TypeError, match="not the class Adam itself"):
        register_optimizer(Opt, torch.optim.Adam)
    with pytest.raises(TypeError, match="update"):
        register_optimizer(object, lambda opt, ps: torch.optim.SGD(ps, lr=0.1))


def test_registered_twin_with_before_step_and_no_schedule() -> None:
    class ConstantSGD:  # lr grows by design: no schedule, and torch's lr follows via before_step
        def __init__(self):
            self.lr, self.t = 0.1, 0

        def update(self, params, grads):
            self.t += 1
            for k in params:
                params[k] -= (self.lr * self.t) * grads[k]

    def before(opt, topt, t):
        for g in topt.param_groups:
            g["lr"] = opt.lr * t

    register_optimizer(ConstantSGD, lambda opt, ps: torch.optim.SGD(ps, lr=opt.lr),
                       before_step=before, lr_schedule=False)
    try:
        report = optimizer_spec(ConstantSGD).check("float64")
        assert report.ok, report
        register_optimizer(ConstantSGD, lambda opt, ps: torch.optim.SGD(ps, lr=opt.lr))
        assert not optimizer_spec(ConstantSGD).check("float64").ok  # no before_step: differs
    finally:
        unregister_optimizer(ConstantSGD)


def test_plugin_checks_optimizer_instances_and_classes(tmp_path: Path) -> None:
    module = import_user_module(str(REPO / "examples" / "user_optimizers.py"))
    assert_parity(module.Adam(lr=0.01), dtype="float32")
    ids = [p.id for p in parity_cases(module, dtypes=["float64"], seeds=[0])]
    assert "Adam_300_steps-float64-seed0" in ids and "AdamW-float64-seed0" in ids
    bad = import_user_module(str(write(tmp_path, BUGS["eps added after the lr"][0], "bad_opt.py")))
    with pytest.raises(ParityError, match=r"W1 first differs after step 1 of 20"):
        assert_parity(bad.AdaGrad(), dtype="float64")
    with pytest.raises(CheckError, match="do not apply to an optimizer"):
        assert_parity(module.SGD(), input_shape=(3, 4))


def test_instance_hyper_parameters_are_the_ones_checked() -> None:
    module = import_user_module(str(REPO / "examples" / "user_optimizers.py"))
    opt = module.Momentum(lr=0.3, momentum=0.5)
    report = optimizer_spec(opt).check("float64")
    assert report.ok
    assert "momentum=0.5" in report.info["torch"] and report.info["lr_schedule"] == "{7: 0.09}"
    assert np.isclose(opt.lr, 0.3) and opt.v is None  # the user's instance is not touched


def test_files_of_the_same_name_are_modules_of_their_own(tmp_path: Path) -> None:
    paths = []
    for folder, body in (("a", CORRECT["subclass with other defaults"]),
                         ("b", SGD.format(body="pass")), ("c", CORRECT["required lr, no defaults"])):
        (tmp_path / folder).mkdir()
        paths.append(write(tmp_path / folder, body))
    a, b, c = (import_user_module(str(p)) for p in paths)
    assert len({id(a), id(b), id(c)}) == 3 and import_user_module(str(paths[0])) is a
    assert [s.name for s in discover_optimizers(c)[0]] == ["my_opt.Momentum"]


MOMENTUM = """
    class {name}:
        def __init__(self, lr=0.01, momentum=0.9):
            self.lr, self.momentum, self.v = lr, momentum, {{}}
        def update(self, params, grads):
            self.lr0 = getattr(self, "lr0", self.lr)
            for k, p in params.items():
                {body}
"""
CLASSIC_STEP = "self.v[k] = self.momentum * self.v.get(k, 0) - {lr} * grads[k]; p += self.v[k]"
TORCH_STEP = "self.v[k] = self.momentum * self.v.get(k, 0) + grads[k]; p -= {lr} * self.v[k]"


@pytest.mark.parametrize(("step", "form"), [(CLASSIC_STEP, "the classic form"),
                                            (TORCH_STEP, "torch's form")])
def test_momentum_of_either_form_is_checked_under_an_lr_change(step, form, tmp_path) -> None:
    ok = write(tmp_path, MOMENTUM.format(name="Momentum", body=step.format(lr="self.lr")))
    code, js = run(ok, tmp_path)
    assert code == 0 and any(n.startswith(form) for n in js["summary"]["notes"]["my_opt.Momentum"])
    forget_user_modules()
    cached = write(tmp_path, MOMENTUM.format(name="Momentum", body=step.format(lr="self.lr0")),
                   "cached.py")
    code, js = run(cached, tmp_path)
    assert code == 1 and "cached.Momentum" in failed(js)
    msg = next(r["message"] for r in js["layers"] if r["layer"] == "cached.Momentum"
               for r in r["results"] if r["status"] == "FAIL")
    assert "first differs after step 7" in msg and "passes at a constant lr" in msg


def test_an_attribute_the_twin_ignores_is_a_note(tmp_path: Path) -> None:
    path = write(tmp_path, """
        class SGDWD(scratch.SGD):
            def __init__(self, lr=0.1, weight_decay=0.0):
                super().__init__(lr)
                self.weight_decay = weight_decay
    """)
    code, js = run(path, tmp_path)
    assert code == 0
    assert any("weight_decay=0.0 has no counterpart" in n for n in js["summary"]["notes"]["my_opt.SGDWD"])


def test_check_optimizer_calls_a_check_that_cannot_see_the_update_vacuous() -> None:
    from reference.optimizers import check_optimizer
    from scratch import SGD

    class NoOp(SGD):
        def update(self, params, grads): pass

    assert check_optimizer(NoOp(0.01), dtype="float32", grad_scale=1e-4).status == "VACUOUS"
    assert check_optimizer(SGD(0.0)).status == "VACUOUS"
    assert check_optimizer(NoOp(0.01), dtype="float32").status == "FAIL"
    with pytest.raises(CheckError, match="steps must be a positive integer"):
        check_optimizer(SGD(0.1), steps=0)


def test_a_twin_that_cannot_be_built_is_a_setup_error(tmp_path: Path, capsys) -> None:
    path = write(tmp_path, """
        import torch
        from reference import register_optimizer
        class Lion:
            def __init__(self): self.lr = 0.1
            def update(self, params, grads): pass
        register_optimizer(Lion, lambda opt, ps: torch.optim.SGD(ps, lr=opt.learning_rate))
        class Sophia:
            def update(self, params, grads): pass
    """)
    assert main(["check", "--module", str(path), *FAST, "-q"]) == 2
    err = capsys.readouterr().err
    assert "my_opt.Lion: the torch twin could not be built: AttributeError" in err
    assert "warning: my_opt.Sophia: has update(params, grads) but no PyTorch twin" in err


def test_an_optimizer_failure_reads_in_steps_without_the_batch_note(tmp_path: Path) -> None:
    bad = import_user_module(str(write(tmp_path, BUGS["eps added after the lr"][0], "eps.py")))
    with pytest.raises(ParityError) as exc:
        assert_parity(bad.AdaGrad(), dtype="float64")
    text = str(exc.value)
    assert text.startswith("AdaGrad [float64, 20 steps, seed 0]: FAIL") and "batch size" not in text
