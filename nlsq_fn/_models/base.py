"""`Model`, the base of `nlsq_fn.models`: named parameters, a `prefix`, ``+`` (`Sum`)
and an initial guess from the data; `Function` makes a user function such a model.

Models are `equinox.Module`s holding only static configuration, so equal models hash
equal and share compiled fits. Guesses assume a 1-D `x` and work in NumPy.
"""

import abc
import inspect
from collections.abc import Callable
from typing import ClassVar

import equinox as eqx
import numpy as np


class Model(eqx.Module):
    """A model with named parameters. Subclasses define `base_names`, `evaluate` and
    `initial_guess`; `prefix` is prepended to every parameter name."""

    prefix: str = eqx.field(default="", static=True, kw_only=True)

    base_names: ClassVar[tuple[str, ...]] = ()
    # Composite guesses run peaks and oscillations first, then baselines on what is left.
    guess_order: ClassVar[int] = 0

    @abc.abstractmethod
    def evaluate(self, x, **params):
        """The model in its unprefixed parameter names."""

    @abc.abstractmethod
    def initial_guess(self, x: np.ndarray, y: np.ndarray) -> dict:
        """Starting values (unprefixed names) estimated from the data."""

    @property
    def names(self) -> tuple[str, ...]:
        return self.base_names

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(self.prefix + name for name in self.names)

    def __call__(self, x, params):
        return self.evaluate(x, **{name: params[self.prefix + name] for name in self.names})

    def guess(self, x, y) -> dict:
        """Initial values of `param_names` from data ``(x, y)`` (1-D)."""
        x, y = _sorted_1d(x, y)
        values = self.initial_guess(x, y)
        return {self.prefix + name: float(values[name]) for name in self.names}

    def __add__(self, other):
        return Sum((self, other))


class Sum(eqx.Module):
    """The sum of models; parameter names must be distinct (use `prefix`)."""

    components: tuple = eqx.field(static=True)

    def __init__(self, components):
        flat = []
        for component in components:
            flat.extend(component.components if isinstance(component, Sum) else [component])
        names = [name for component in flat for name in component.param_names]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(
                f"The summed models share parameter names {duplicates}; give them "
                "different `prefix`es."
            )
        self.components = tuple(flat)

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(name for c in self.components for name in c.param_names)

    def __call__(self, x, params):
        return sum(component(x, params) for component in self.components)

    def __add__(self, other):
        return Sum((self, other))

    def guess(self, x, y) -> dict:
        """Each component guesses from what the others guessed so far leave over
        (peaks first, baselines last)."""
        x, y = _sorted_1d(x, y)
        remaining = y.copy()
        values = {}
        for component in sorted(self.components, key=lambda c: c.guess_order):
            guess = component.guess(x, remaining)
            values.update(guess)
            remaining = remaining - np.asarray(component(x, guess))
        return {name: values[name] for name in self.param_names}


def _sorted_1d(x, y):
    x, y = np.ravel(np.asarray(x, float)), np.ravel(np.asarray(y, float))
    if x.shape != y.shape:
        raise ValueError(
            f"guess needs a 1-D x with one value per point: x has {x.size}, y {y.size}."
        )
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


class Function(Model):
    """A user function ``func(x, p1, p2, ...)`` as a named model, so that it can be
    summed with library models; `guesser` (``guesser(x, y) -> dict`` by parameter name,
    unprefixed) is optional, without it `CurveFit` needs `p0`::

        nf.models.Function(my_peak, prefix="m_") + nf.models.Linear()
    """

    func: Callable = eqx.field(static=True)
    guesser: Callable | None = eqx.field(default=None, static=True)

    @property
    def names(self):
        parameters = list(inspect.signature(self.func).parameters.values())[1:]
        if not parameters or any(
            p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) for p in parameters
        ):
            raise ValueError(
                "Function needs func(x, p1, p2, ...) with named positional parameters."
            )
        return tuple(p.name for p in parameters)

    def evaluate(self, x, **params):
        return self.func(x, *(params[name] for name in self.names))

    def initial_guess(self, x, y):
        if self.guesser is None:
            raise ValueError(
                f"{self.func.__name__} has no guess: give `p0` (a dict by parameter name) "
                "or pass guesser= to Function."
            )
        return self.guesser(x, y)
