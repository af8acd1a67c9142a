"""The classic optimizers, one ``update(params, grads)`` each.

``params`` and ``grads`` are dicts name -> ndarray (a net's ``params`` and what its
``gradient`` returns). ``update`` changes the arrays in ``params`` *in place*, so the layers that
share them see the new values, and keeps their dtype (float32 stays float32: every constant is
a Python float or cast to the parameter's dtype). The state (velocities, accumulators) is kept
per name and created on the first call.

``lr`` (and the other hyper-parameters) are plain attributes: setting ``opt.lr`` between two
updates is how a learning-rate schedule is applied.

Defaults and rules are the book's. Where torch's twin computes something else the switch that
aligns them is an argument (docs/conventions.md):

* ``Momentum(form="classic")`` folds ``lr`` into the velocity (``v = m*v - lr*g; p += v``);
  ``form="torch"`` keeps it out (``buf = m*buf + g; p -= lr*buf``) like ``torch.optim.SGD``.
  The two agree exactly while ``lr`` is constant and part ways when it changes.
* ``Nesterov(form="book")`` is the book's code, which uses the *updated* velocity in the
  parameter step; it is a different optimizer from torch's Nesterov (already at step 1).
  ``form="bengio"`` is the formula the book cites (arXiv:1212.0901), equal to
  ``SGD(nesterov=True)`` while ``lr`` is constant; ``form="torch"`` equals it always.
* ``AdaGrad``/``RMSprop``/``Adam`` add ``eps=1e-7`` (torch: 1e-10, 1e-8, 1e-8); classic Adam
  adds it to the *uncorrected* ``sqrt(v)``.
"""

from __future__ import annotations

import math

import numpy as np

CLASSIC_EPS = 1e-7


class Optimizer:
    """Base class: ``update(params, grads)`` updates every array of ``params`` in place."""

    def __init__(self, lr: float) -> None:
        self.lr = lr

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        raise NotImplementedError

    @staticmethod
    def _state(store: dict[str, np.ndarray], params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        for key, val in params.items():
            if key not in store:
                store[key] = np.zeros_like(val)
        return store

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items()
                         if not isinstance(v, dict) and k != "iter")
        return f"{type(self).__name__}({args})"


def _c(p: np.ndarray, value: float) -> np.generic:
    """A constant in the parameter's dtype: no silent promotion of float32 to float64."""
    return p.dtype.type(value)


class SGD(Optimizer):
    """``p -= lr * g``. Twin: ``torch.optim.SGD(lr=lr)``."""

    def __init__(self, lr: float = 0.01) -> None:
        super().__init__(lr)

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        for key, p in params.items():
            p -= _c(p, self.lr) * grads[key]


class Momentum(Optimizer):
    """Momentum SGD.

    ``form="classic"`` (the book): ``v = momentum * v - lr * g; p += v``.
    ``form="torch"``: ``buf = momentum * buf + g; p -= lr * buf`` (``torch.optim.SGD(lr,
    momentum, dampening=0)``). With a constant ``lr``, ``v = -lr * buf`` at every step and the
    two are the same optimizer; after ``lr`` changes, the classic velocity still carries the
    old ``lr`` in its history while torch's buffer does not.
    """

    FORMS = ("classic", "torch")

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, form: str = "classic") -> None:
        super().__init__(lr)
        if form not in self.FORMS:
            raise ValueError(f"Momentum form must be one of {self.FORMS}, got {form!r}")
        self.momentum = momentum
        self.form = form
        self.v: dict[str, np.ndarray] = {}

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        v = self._state(self.v, params)
        for key, p in params.items():
            m, lr, g = _c(p, self.momentum), _c(p, self.lr), grads[key]
            if self.form == "classic":
                v[key] = m * v[key] - lr * g
                p += v[key]
            else:
                v[key] = m * v[key] + g
                p -= lr * v[key]


class Nesterov(Optimizer):
    """Nesterov's accelerated gradient in the momentum form of Bengio et al. (1212.0901).

    ``form="book"`` (the default: the book's code, line for line)::

        v = momentum * v - lr * g
        p += momentum**2 * v - (1 + momentum) * lr * g      # v is the *new* velocity

    ``form="bengio"`` (the paper's formula, which uses the *previous* velocity)::

        p += momentum**2 * v - (1 + momentum) * lr * g
        v = momentum * v - lr * g

    equal to ``torch.optim.SGD(momentum, nesterov=True)`` while ``lr`` is constant.
    ``form="torch"``: ``buf = momentum * buf + g; p -= lr * (g + momentum * buf)``, equal to it
    always. The book's form steps ``(1 + m + m**2) * lr * g`` on the first update where the
    others step ``(1 + m) * lr * g`` (1.43x for m = 0.9): it is a different optimizer.
    """

    FORMS = ("book", "bengio", "torch")

    def __init__(self, lr: float = 0.01, momentum: float = 0.9, form: str = "book") -> None:
        super().__init__(lr)
        if form not in self.FORMS:
            raise ValueError(f"Nesterov form must be one of {self.FORMS}, got {form!r}")
        self.momentum = momentum
        self.form = form
        self.v: dict[str, np.ndarray] = {}

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        v = self._state(self.v, params)
        for key, p in params.items():
            m, lr, g = _c(p, self.momentum), _c(p, self.lr), grads[key]
            if self.form == "book":
                v[key] *= m
                v[key] -= lr * g
                p += m * m * v[key]
                p -= (1 + m) * lr * g
            elif self.form == "bengio":
                p += m * m * v[key]
                p -= (1 + m) * lr * g
                v[key] *= m
                v[key] -= lr * g
            else:
                v[key] = m * v[key] + g
                p -= lr * (g + m * v[key])


class AdaGrad(Optimizer):
    """``h += g*g; p -= lr * g / (sqrt(h) + eps)``, eps = 1e-7.

    Twin: ``torch.optim.Adagrad(lr, eps=1e-7)`` (torch's default eps is 1e-10).
    """

    def __init__(self, lr: float = 0.01, eps: float = CLASSIC_EPS) -> None:
        super().__init__(lr)
        self.eps = eps
        self.h: dict[str, np.ndarray] = {}

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        h = self._state(self.h, params)
        for key, p in params.items():
            g = grads[key]
            h[key] += g * g
            p -= _c(p, self.lr) * g / (np.sqrt(h[key]) + _c(p, self.eps))


class RMSprop(Optimizer):
    """``h = decay_rate * h + (1 - decay_rate) * g*g; p -= lr * g / (sqrt(h) + eps)``.

    Twin: ``torch.optim.RMSprop(lr, alpha=decay_rate, eps=1e-7)`` (torch's eps is 1e-8).
    """

    def __init__(self, lr: float = 0.01, decay_rate: float = 0.99, eps: float = CLASSIC_EPS) -> None:
        super().__init__(lr)
        self.decay_rate = decay_rate
        self.eps = eps
        self.h: dict[str, np.ndarray] = {}

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        h = self._state(self.h, params)
        for key, p in params.items():
            g = grads[key]
            h[key] *= _c(p, self.decay_rate)
            h[key] += _c(p, 1 - self.decay_rate) * g * g
            p -= _c(p, self.lr) * g / (np.sqrt(h[key]) + _c(p, self.eps))


class Adam(Optimizer):
    """The book's Adam: bias correction folded into the step size, eps on the raw ``sqrt(v)``::

        t += 1
        lr_t = lr * sqrt(1 - beta2**t) / (1 - beta1**t)
        m += (1 - beta1) * (g - m)
        v += (1 - beta2) * (g*g - v)
        p -= lr_t * m / (sqrt(v) + eps)                  # eps = 1e-7

    ``torch.optim.Adam`` divides by ``sqrt(v / (1 - beta2**t)) + eps``: the same update when its
    eps is ``1e-7 / sqrt(1 - beta2**t)`` at step t (3.2e-6 at t=1, 1e-7 in the limit). With a
    fixed torch eps the two differ only where ``sqrt(v)`` is comparable to eps.
    """

    def __init__(self, lr: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 eps: float = CLASSIC_EPS) -> None:
        super().__init__(lr)
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.iter = 0
        self.m: dict[str, np.ndarray] = {}
        self.v: dict[str, np.ndarray] = {}

    def update(self, params: dict[str, np.ndarray], grads: dict[str, np.ndarray]) -> None:
        m, v = self._state(self.m, params), self._state(self.v, params)
        self.iter += 1
        lr_t = self.lr * math.sqrt(1.0 - self.beta2 ** self.iter) / (1.0 - self.beta1 ** self.iter)
        for key, p in params.items():
            g = grads[key]
            m[key] += _c(p, 1 - self.beta1) * (g - m[key])
            v[key] += _c(p, 1 - self.beta2) * (g * g - v[key])
            p -= _c(p, lr_t) * m[key] / (np.sqrt(v[key]) + _c(p, self.eps))


OPTIMIZERS = {"SGD": SGD, "Momentum": Momentum, "Nesterov": Nesterov, "AdaGrad": AdaGrad,
              "RMSprop": RMSprop, "Adam": Adam}
