"""How a user's model takes its parameters: one array (the NLSQ guide's
``model(x, params)``) or one argument each (SciPy's ``f(x, a, b, c)``).

The rule, in order (`model_convention`):

1. ``param_style="array"`` or ``"unpacked"`` given explicitly: that.
2. An `nlsq_fn.models` model (it has ``param_names`` and ``guess``): named parameters.
3. ``f(x, *p)`` (a ``*args`` parameter) or three or more positional parameters
   (``f(x, a, b)``): unpacked, as SciPy calls it.
4. Exactly two positional parameters, ``f(x, q)``: this is either the guide's array
   model or a SciPy model with one parameter. Without `p0` it is SciPy's
   one-parameter model (as SciPy counts parameters; an array model could not tell its
   length anyway). With `p0` it is the array convention when
   - `p0` has more than one value (a single named parameter cannot take several), or
   - the second parameter is named like a parameter vector (`ARRAY_NAMES`: ``params``,
     ``p``, ``theta``, ``beta``, ...),
   and SciPy's one-parameter model otherwise (``f(x, k)`` with ``p0=[1.0]`` receives
   a scalar ``k``, as in SciPy).
5. No inspectable signature (a builtin, some C-extension callables): unpacked, as
   SciPy calls it.

In the ambiguous case 4 (or to call ``f(x, a)`` with one value named ``p``), pass
``param_style`` to override the rule.
"""

import inspect
import weakref
from collections.abc import Callable, Mapping
from typing import Literal, cast

import equinox as eqx
import jax
import numpy as np

ParamStyle = Literal["array", "unpacked", "named"]

# Names that mark ``f(x, <name>)`` as taking the whole parameter vector.
ARRAY_NAMES = frozenset(
    {
        "params",
        "param",
        "parameters",
        "p",
        "pars",
        "theta",
        "beta",
        "coeffs",
        "coef",
        "coefs",
        "coefficients",
        "weights",
        "popt",
        "pvec",
        "p_vec",
    }
)


class UnpackedModel(eqx.Module):
    """``f(x, *params)`` (SciPy's convention) seen as ``model(x, params)``. The
    function is a static field: wrappers of the same function compare and hash equal,
    so they share compiled code."""

    f: Callable = eqx.field(static=True)

    def __call__(self, x, params):
        return self.f(x, *params)


# The wrapper of the function fitted last (a refit, again and again, builds none: an
# Equinox module costs 10 µs, a few percent of a settled refit). Only the last: a weak
# cache of wrappers would keep its keys alive through the wrappers.
_last_unpacked: tuple = (None, None)


def unpacked_model(f: Callable) -> UnpackedModel:
    """`UnpackedModel(f)`, reused while `f` is the function fitted last."""
    global _last_unpacked
    function, model = _last_unpacked
    if function is not f:
        model = UnpackedModel(f)
        _last_unpacked = (f, model)
    return model


class UnpackedJacobian(eqx.Module):
    """``jac(x, *params)`` seen as ``jac(x, params)``."""

    jac: Callable = eqx.field(static=True)

    def __call__(self, x, params):
        return self.jac(x, *params)


class NamedModel(eqx.Module):
    """A model taking a dict of named parameters (`nlsq_fn.models`), seen as a model of
    the flat parameter vector in the order of `names`."""

    model: Callable = eqx.field(static=True)
    names: tuple[str, ...] = eqx.field(static=True)

    def __call__(self, x, params):
        return self.model(x, {name: params[i] for i, name in enumerate(self.names)})


def is_named_model(f) -> bool:
    return hasattr(f, "param_names") and hasattr(f, "guess")


# Signatures already read, by function (weakly): `inspect.signature` is a good part of
# a small refit's front end.
_signatures: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _positional_parameters(f) -> tuple[list[str], bool] | None:
    """Names of the positional parameters of `f` and whether it has ``*args``; None
    when the signature cannot be inspected."""
    try:
        return _signatures[f]
    except (KeyError, TypeError):
        pass
    signature = _read_signature(f)
    try:
        _signatures[f] = signature
    except TypeError:  # not weakly referenceable
        pass
    return signature


def _read_signature(f) -> tuple[list[str], bool] | None:
    try:
        parameters = list(inspect.signature(f).parameters.values())
    except (TypeError, ValueError):
        return None
    names = [p.name for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return names, any(p.kind == p.VAR_POSITIONAL for p in parameters)


def model_convention(f: Callable, p0=None, param_style: str | None = None) -> ParamStyle:
    """Which convention `f` follows (the rule is in this module's docstring)."""
    if param_style is not None:
        if param_style not in ("array", "unpacked"):
            raise ValueError(
                f"`param_style` must be 'array' (model(x, params)), 'unpacked' "
                f"(f(x, a, b, ...)) or None, got {param_style!r}."
            )
        return cast(ParamStyle, param_style)
    if is_named_model(f):
        return "named"
    signature = _positional_parameters(f)
    if signature is None:
        return "unpacked"
    names, var_positional = signature
    if var_positional or len(names) != 2:
        return "unpacked"
    if p0 is None or isinstance(p0, dict):
        return "unpacked"
    several_values = count_values(p0) > 1
    if several_values or names[1].lower() in ARRAY_NAMES:
        return "array"
    return "unpacked"


def count_values(p0) -> int:
    """How many numbers `p0` holds (a list of scalars, an array, traced or not)."""
    if isinstance(p0, (list, tuple)) and all(type(v) is float for v in p0):
        return len(p0)  # (SciPy's usual `p0`: at once)
    return int(sum(np.size(leaf) for leaf in jax.tree.leaves(p0)))


def parameter_names(f: Callable, style: ParamStyle, n: int | None = None):
    """Names of the fit parameters for reports: ``('a', 'b')`` for ``f(x, a, b)``,
    ``('params[0]', 'params[1]')`` for ``model(x, params)``; None if unknown (then
    ``p0`` decides how many there are)."""
    names = getattr(f, "param_names", None)
    if names is not None:
        return tuple(names)
    signature = _positional_parameters(f)
    if style == "array":
        if n is None:
            return None
        base = signature[0][1] if signature and len(signature[0]) >= 2 else "p"
        return tuple(f"{base}[{i}]" for i in range(n))
    if signature is None or signature[1] or len(signature[0]) < 2:
        return None
    return tuple(signature[0][1:])


def vector_model(f: Callable, p0=None, param_style: str | None = None):
    """``(f as model(x, parameter vector), its parameters' names or None)``: the
    prologue of the front ends that take parameters by name (``fixed=`` / ``ties=``,
    `global_fit`, `odr`). A dict `p0` names the parameters and counts none."""
    counted = None if isinstance(p0, Mapping) else p0
    style = model_convention(f, counted, param_style)
    names = parameter_names(f, style, None if counted is None else count_values(counted))
    model: Callable = f
    if style == "named":
        model = NamedModel(f, tuple(names))
    elif style == "unpacked":
        model = unpacked_model(f)
    return model, None if names is None else tuple(names)
