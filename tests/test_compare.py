"""The array comparison: verdicts, the numbers it reports, and its message."""

import numpy as np
import pytest

from harness.compare import FAIL, PASS, VACUOUS, Tolerance, compare


def cmp(a, e, **kw):
    kw.setdefault("tensor", "dW")
    kw.setdefault("layer", "Affine")
    return compare(np.asarray(a), np.asarray(e), **kw)


def test_identical_arrays_pass():
    assert cmp([[1.0, 2.0]], [[1.0, 2.0]]).status == PASS


def test_report_names_layer_tensor_index_and_sizes():
    e = np.arange(12.0).reshape(3, 4)
    a = e.copy()
    a[2, 1] += 0.25
    r = cmp(a, e)
    assert r.status == FAIL and r.mismatched == 1 and r.total == 12
    assert r.max_abs == pytest.approx(0.25) and r.max_abs_index == (2, 1)
    assert r.max_rel == pytest.approx(0.25 / 9) and r.max_rel_index == (2, 1)
    text = str(r)
    for piece in ("Affine.dW", "FAIL", "1 / 12", "(2, 1)", "0.25", "rtol=1.0e-09"):
        assert piece in text, piece


def test_worst_element_is_judged_against_its_own_allowance():
    e = np.array([1000.0, 1.0])
    a = e + np.array([1e-4, 1e-4])  # same absolute error; only the small element fails rtol 1e-6
    r = cmp(a, e, tol=Tolerance(rtol=1e-6, atol=0.0))
    assert r.status == FAIL and r.mismatched == 1 and r.worst_index == (1,)


def test_scaled_atol_uses_the_tensor_magnitude():
    e = np.array([100.0, 0.0])
    a = np.array([100.0, 5e-9])  # an element that cancelled to 0: judged against max|e| = 100
    assert cmp(a, e, tol=Tolerance(rtol=1e-9, atol=1e-10)).status == PASS
    assert cmp(a, e, tol=Tolerance(rtol=1e-9, atol=1e-12)).status == FAIL
    assert cmp(a, e, tol=Tolerance(rtol=1e-9, atol=1e-10, scaled=False)).status == FAIL


@pytest.mark.parametrize(("a", "e", "msg"), [
    (np.ones((2, 3)), np.ones((3, 2)), "shape mismatch: scratch (2, 3) vs reference (3, 2)"),
    (np.ones(3, np.float32), np.ones(3), "dtype mismatch: scratch float32, expected float64"),
    (np.ones(3).reshape(1, 3), np.ones(3), "shape mismatch"),  # no broadcasting
])
def test_structural_mismatches_fail_with_a_message(a, e, msg):
    r = cmp(a, e)
    assert r.status == FAIL and msg in r.message


def test_none_from_scratch_fails():
    r = compare(None, np.ones(2), tensor="dx", layer="Relu")
    assert r.status == FAIL and "returned None" in str(r)


def test_nan_is_never_equal_and_its_position_is_reported():
    e = np.zeros((2, 2)) + 1.0
    a = e.copy()
    a[1, 0] = np.nan
    r = cmp(a, e)
    assert r.status == FAIL and "(1, 0)" in r.message and "scratch" in r.message


def test_matching_infinities_are_equal():
    assert cmp([np.inf, 1.0], [np.inf, 1.0]).status == PASS
    assert cmp([np.inf, 1.0], [-np.inf, 1.0]).status == FAIL


@pytest.mark.parametrize(("a", "e"), [(np.zeros(5), np.zeros(5)), (np.full(4, 0.5), np.full(4, 0.5))])
def test_all_zero_or_constant_tensors_are_vacuous_not_pass(a, e):
    assert cmp(a, e).status == VACUOUS


def test_a_scalar_loss_is_not_vacuous():
    assert cmp(np.float64(2.3), np.float64(2.3), tensor="loss").status == PASS


def test_float32_default_tolerance_is_looser_than_float64():
    e = np.linspace(1, 2, 10)
    a = e * (1 + 1e-6)
    assert cmp(a.astype(np.float32), e.astype(np.float32), dtype=np.float32).status == PASS
    assert cmp(a, e).status == FAIL


def test_to_dict_is_json_safe():
    import json

    r = cmp([np.nan, 1.0], [1.0, 1.0])
    json.dumps(r.to_dict())


def test_a_list_is_not_an_array_even_when_numpy_could_convert_it() -> None:
    r = compare([1.0, 2.0], np.array([1.0, 2.0]), tensor="out", layer="L")
    assert r.status == FAIL and "returned a Python list, not an ndarray" in r.message


def test_sides_name_what_was_compared_in_the_report() -> None:
    r = compare(np.array([1.0, 5.0]), np.array([1.0, 2.0]), tensor="dx torch vs numerical",
                sides=("torch", "numerical"))
    assert "actual (torch) 5, expected (numerical) 2" in str(r)
    assert "actual (scratch) 5, expected (torch) 2" in str(compare(np.array([1.0, 5.0]),
                                                                   np.array([1.0, 2.0]), tensor="x"))
