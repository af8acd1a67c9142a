"""Weight transfer between scratch nets and their torch twins: layouts, copies, both ways."""

import numpy as np
import pytest
import torch

import scratch
from reference.nets import copy_to_scratch, link_params, load_from_scratch, to_torch


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_two_layer_net_twin_has_the_same_weights_in_torch_layout(dtype):
    net = scratch.TwoLayerNet(6, 4, 3, weight_init_std=0.3, dtype=dtype, seed=2)
    tnet = to_torch(net)
    w1 = tnet.body[0].weight.detach().numpy()
    assert w1.shape == (4, 6) and w1.dtype == dtype
    np.testing.assert_array_equal(w1, net.params["W1"].T)
    np.testing.assert_array_equal(tnet.params_numpy()["b2"], net.params["b2"])


def test_transfers_copy_never_alias():
    net = scratch.TwoLayerNet(6, 4, 3, seed=2)
    tnet = to_torch(net)
    with torch.no_grad():
        tnet.body[0].weight.add_(1.0)
    assert not np.allclose(tnet.params_numpy()["W1"], net.params["W1"])
    copy_to_scratch(tnet, net)
    np.testing.assert_array_equal(tnet.params_numpy()["W1"], net.params["W1"])
    assert net.layers["Affine1"].params["W"] is net.params["W1"]  # updated in place
    net.params["W1"] += 1.0
    assert not np.allclose(tnet.params_numpy()["W1"], net.params["W1"])
    load_from_scratch(tnet, net)
    np.testing.assert_array_equal(tnet.params_numpy()["W1"], net.params["W1"])


def test_loss_and_gradients_agree_in_float64(rng):
    net = scratch.TwoLayerNet(6, 4, 3, weight_init_std=0.5, seed=5)
    tnet = to_torch(net)
    x, t = rng.standard_normal((5, 6)), rng.integers(0, 3, 5)
    grads = net.gradient(x, t)
    loss = tnet.loss(torch.from_numpy(x), torch.from_numpy(t))
    loss.backward()
    assert loss.item() == pytest.approx(float(net.loss(x, t)), rel=1e-14)
    for k, g in tnet.grads().items():
        np.testing.assert_allclose(g, grads[k], rtol=1e-12, atol=1e-15)


def test_a_param_not_shared_with_any_layer_is_a_clear_error():
    net = scratch.TwoLayerNet(6, 4, 3)
    net.params["W1"] = net.params["W1"] * 1.0  # rebinding breaks the sharing
    with pytest.raises(LookupError, match=r"params\['W1'\] is not shared with any layer"):
        link_params(net)


def test_arrays_read_from_the_twin_do_not_share_its_memory():
    tnet = to_torch(scratch.TwoLayerNet(6, 4, 3, seed=2))
    b2 = tnet.params_numpy()["b2"]
    b2 += 1.0
    assert not np.allclose(tnet.params_numpy()["b2"], b2)
