"""The PyTorch twin of any scratch net, and weight transfer between the two, both ways.

A scratch net (``TwoLayerNet``, ``MultiLayerNet``, ``SimpleConvNet`` or a user's own) has
``params`` (name -> array), ``layers`` (an ordered dict or list, forward order) and
``last_layer``. Its twin, :class:`TorchNet`, holds one registered twin module per scratch layer
in the same order, plus the loss twin. Parameters are matched by identity: ``net.params['W1']``
is the very array inside ``net.layers['Affine1'].params['W']``, so the twin knows that 'W1' is
``layers[0].weight`` (transposed). Transfers always copy; nothing is ever aliased.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from reference.registry import Twin, WeightSpec, lookup

TORCH_DTYPE = {np.dtype(np.float32): torch.float32, np.dtype(np.float64): torch.float64}


@dataclass(frozen=True)
class ParamLink:
    """Where net.params[key] lives: layer ``index``, scratch name ``name``, and its spec."""

    key: str
    index: int
    name: str
    spec: WeightSpec


def net_layers(net: Any) -> list[tuple[str, Any]]:
    layers = getattr(net, "layers", None)
    if layers is None:
        raise TypeError(f"{type(net).__name__} has no .layers (an ordered dict or list of layers)")
    if isinstance(layers, dict):
        return list(layers.items())
    return [(f"{type(layer).__name__}{i}", layer) for i, layer in enumerate(layers)]


def last_layer(net: Any) -> Any:
    last = getattr(net, "last_layer", None) or getattr(net, "lastLayer", None)
    if last is None:
        raise TypeError(f"{type(net).__name__} has no .last_layer (the loss layer)")
    return last


def _twin(layer: Any) -> Twin:
    twin = lookup(type(layer))
    if twin is None:
        from harness.book_layers import twin_by_name

        twin = twin_by_name(type(layer))  # a layer written from the book, named like a built-in
    if twin is None:
        name = type(layer).__name__
        if name in ("Dropout", "BatchNormalization"):
            hint = (f": a {name} written the book's way is not matched by its name (its twin "
                    f"shares state through the scratch class: the mask both sides use, the "
                    f"running statistics and their conventions); subclass scratch's, "
                    f"from scratch.normalization import {name}")
        else:
            hint = (f": register one with reference.register({name}, torch_factory, "
                    "weight_map), subclass the scratch layer it implements, or name it like "
                    "a built-in (Affine, Relu, Sigmoid, Tanh, SoftmaxWithLoss, Convolution, "
                    "Pooling) if it is one")
        raise LookupError(f"no PyTorch twin registered for layer {name}{hint}")
    return twin


def _view(layer: Any, twin: Twin) -> Any:
    """``layer`` with ``params``/``grads`` dicts: itself, or, for the book's layout (weights as
    attributes W, b), a view sharing its arrays (:func:`harness.book_layers.with_param_dicts`)."""
    from harness.book_layers import with_param_dicts

    return with_param_dicts(layer, twin)[0]


def injected_layers(net: Any) -> list[Any]:
    """The net's layers whose twin has a ``prepare`` hook: the twin's forward installs
    something in them (Dropout: a fixed mask, used by every training forward until cleared).
    Empty for a net without ``layers`` or with a layer no twin is registered for."""
    try:
        layers = net_layers(net)
    except TypeError:
        return []
    out = []
    for _, layer in layers:
        twin = lookup(type(layer))
        if twin is not None and twin.prepare is not None:
            out.append(layer)
    return out


def clear_injected(layers: list[Any]) -> None:
    """Remove what the twins' ``prepare`` hooks installed in these scratch layers (Dropout's
    fixed mask: left in place, the next training forward would reuse it, and one on a batch
    of another size would raise)."""
    for layer in layers:
        clear = getattr(layer, "clear_mask", None)
        if callable(clear):
            clear()
        elif getattr(layer, "fixed_mask", None) is not None:
            layer.fixed_mask = None


def link_params(net: Any) -> list[ParamLink]:
    """Find, for every ``net.params`` key, the layer and parameter that share its array."""
    links: list[ParamLink] = []
    layers = net_layers(net)
    net_name = type(net).__name__
    seen: dict[int, str] = {}
    for key, arr in net.params.items():
        if id(arr) in seen:  # each twin parameter is loaded from one key: no tying
            raise LookupError(f"{net_name}.params[{seen[id(arr)]!r}] and {net_name}.params"
                              f"[{key!r}] are the same array: an optimizer updates it twice per "
                              f"step, once with each key's gradient; give each layer its own "
                              f"array (weights meant to be tied: one key, whose gradient is the "
                              f"sum of the layers' gradients)")
        seen[id(arr)] = key
    for key, arr in net.params.items():
        found: list[ParamLink] = []
        copies: list[str] = []  # layer parameters equal to arr but other arrays
        for i, (lname, layer) in enumerate(layers):
            try:
                params = getattr(_view(layer, _twin(layer)), "params", None) or {}
            except LookupError:
                params = getattr(layer, "params", None) or {}
            for name, p in params.items():
                if p is arr:
                    found.append(ParamLink(key, i, name, _twin(layer).weight_map[name]))
                elif (isinstance(p, np.ndarray) and isinstance(arr, np.ndarray)
                      and p.shape == arr.shape and np.array_equal(p, arr)):
                    copies.append(f"{lname}.{name}")
        if not found:
            copy_of = (f": {copies[0]} holds a copy of it, so an optimizer's in-place update "
                       f"of net.params never reaches the layer; build the layer from the very "
                       f"array" if copies else "")
            raise LookupError(
                f"{net_name}.params[{key!r}] is not shared with any layer's params{copy_of} "
                "(layers must hold the very arrays in net.params; update them in place)")
        if len(found) > 1:  # tied weights: the twin has one parameter per layer
            where = " and ".join(f"{layers[f.index][0]}.{f.name}" for f in found)
            raise LookupError(f"{net_name}.params[{key!r}] is used by {where} (tied weights), "
                              f"which the twin does not model")
        links.append(found[0])
    return links


class TorchNet(nn.Module):
    """The torch twin of a scratch net: twin modules in forward order, then the loss twin.

    ``weight_decay_lambda`` reproduces the classic L2 term: ``0.5 * lambda * sum ||W||^2`` over
    the weights whose scratch name starts with 'W' (not biases, not BatchNorm's gamma/beta) is
    added to the loss, so autograd adds ``lambda * W`` to those gradients only.
    """

    def __init__(self, net: Any, dtype: Any = None) -> None:
        super().__init__()
        pairs = net_layers(net)
        self.names = [n for n, _ in pairs]
        self.scratch_layers = [layer for _, layer in pairs]
        self.twins = [_twin(layer) for layer in self.scratch_layers]
        self.body = nn.ModuleList(t.torch_factory(_view(layer, t)) for t, layer in
                                  zip(self.twins, self.scratch_layers, strict=True))
        last = last_layer(net)
        self.loss_twin = _twin(last)
        self.loss_fn = self.loss_twin.torch_factory(_view(last, self.loss_twin))
        self.links = link_params(net)
        self.weight_decay_lambda = float(getattr(net, "weight_decay_lambda", 0.0) or 0.0)
        self.mask_rng = np.random.default_rng(0)
        first = next(iter(net.params.values()))
        self.np_dtype = np.dtype(dtype or first.dtype)
        self.to(TORCH_DTYPE[self.np_dtype])
        load_from_scratch(self, net)

    def param(self, link: ParamLink) -> nn.Parameter:
        return dict(self.body[link.index].named_parameters())[link.spec.torch_name]

    def forward(self, x: torch.Tensor, inject: bool = True) -> torch.Tensor:
        """Logits. With ``inject``, twins with a ``prepare`` hook (Dropout) first draw one mask
        and install it in both the torch module and its scratch layer, so the scratch forward
        that follows uses the same mask."""
        h = x
        for twin, layer, mod in zip(self.twins, self.scratch_layers, self.body, strict=True):
            if inject and twin.prepare is not None and self.training:
                twin.prepare(layer, mod, h.detach().cpu().numpy(), self.mask_rng)
            h = mod(h)
        return h

    def loss(self, x: torch.Tensor, t: torch.Tensor, inject: bool = True) -> torch.Tensor:
        out = self.loss_fn(self.forward(x, inject), t)
        if self.weight_decay_lambda:
            l2 = sum((self.param(k) ** 2).sum() for k in self.links if k.name.startswith("W"))
            out = out + 0.5 * self.weight_decay_lambda * l2
        return out

    def grads(self) -> dict[str, np.ndarray]:
        """Gradients in scratch layout, keyed like ``net.params`` (zeros where none)."""
        out = {}
        for link in self.links:
            p = self.param(link)
            g = p.grad if p.grad is not None else torch.zeros_like(p)
            out[link.key] = np.array(link.spec.from_torch(g.detach().cpu().numpy()), order="C")
        return out

    def params_numpy(self) -> dict[str, np.ndarray]:
        return {link.key: np.array(link.spec.from_torch(self.param(link).detach().cpu().numpy()),
                                   order="C") for link in self.links}


def to_torch(net: Any, dtype: Any = None) -> TorchNet:
    """A new torch twin of ``net`` holding copies of its current weights."""
    return TorchNet(net, dtype)


def load_from_scratch(tnet: TorchNet, net: Any) -> None:
    """Copy every scratch parameter (and buffer, e.g. running statistics) into the twin."""
    with torch.no_grad():
        for link in tnet.links:
            p = tnet.param(link)
            value = np.ascontiguousarray(link.spec.to_torch(net.params[link.key]))
            if tuple(value.shape) != tuple(p.shape):
                raise ValueError(f"{link.key}: scratch shape {net.params[link.key].shape} converts "
                                 f"to {value.shape}, torch expects {tuple(p.shape)}")
            p.copy_(torch.from_numpy(value))
        for twin, layer, mod in zip(tnet.twins, tnet.scratch_layers, tnet.body, strict=True):
            for attr, spec in twin.buffer_map.items():
                val = getattr(layer, attr, None)
                if val is not None:
                    buf = mod.get_buffer(spec.torch_name)
                    buf.copy_(torch.from_numpy(np.ascontiguousarray(spec.to_torch(val))))


def copy_to_scratch(tnet: TorchNet, net: Any) -> None:
    """Write the twin's weights into the scratch arrays in place (layers see the change)."""
    for key, value in tnet.params_numpy().items():
        np.copyto(net.params[key], value.astype(net.params[key].dtype, copy=False))
