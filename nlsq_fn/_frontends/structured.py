"""Fixed and tied parameters for `curve_fit` and `CurveFit`: a thin layer that fits the
model of the free parameters and reports every parameter.

``fixed={"b": 1.3}`` holds `b` at 1.3; ``ties={"c": lambda p: 2 * p["a"]}`` makes `c`
a function of the other parameters (`p` holds the free and fixed ones by name). The fit
itself is an ordinary fit of `StructuredModel`, the model of the free parameters, so
the core solver is unchanged. Its result is then expanded: `popt` over all parameters in
the model's order, and `pcov` of all parameters propagated through the Jacobian ``E`` of
the map free -> all (``E C Eᵀ``: zero rows for the fixed ones, the tie's Jacobian for
the tied ones, the delta method).
"""

from collections.abc import Callable, Mapping

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._misc import is_concrete
from .._problem.arguments import as_bounds
from .._problem.conventions import count_values, vector_model
from .curve_fit_inputs import feasible_start

__all__ = ["StructuredModel", "parameter_structure"]


class StructuredModel(eqx.Module):
    """``model(x, free)``: the user's model with the fixed values and ties filled in.
    The fixed values are an array field (traced in a compiled fit: new values compile
    nothing); the names and tie functions are static."""

    full_model: Callable  # model(x, all parameters as one vector)
    names: tuple[str, ...] = eqx.field(static=True)
    free: tuple[str, ...] = eqx.field(static=True)
    fixed_names: tuple[str, ...] = eqx.field(static=True)
    fixed_values: jax.Array | np.ndarray  # NumPy when given concretely
    tie_names: tuple[str, ...] = eqx.field(static=True)
    tie_functions: tuple[Callable, ...] = eqx.field(static=True)

    @property
    def param_names(self) -> tuple[str, ...]:
        """The free parameters: what the fit varies (and names in its messages)."""
        return self.free

    def all_params(self, free):
        """The vector of all parameters (in the model's order) for the free ones."""
        free = jnp.asarray(free)
        known = {name: free[i] for i, name in enumerate(self.free)}
        fixed = jnp.asarray(self.fixed_values, free.dtype)
        known |= {name: fixed[i] for i, name in enumerate(self.fixed_names)}
        values = dict(known)
        for name, tie in zip(self.tie_names, self.tie_functions, strict=True):
            # A tie reads the free and fixed parameters only (no chains of ties).
            values[name] = jnp.asarray(tie(dict(known)), free.dtype)
        return jnp.stack([jnp.reshape(values[name], ()) for name in self.names])

    def __call__(self, x, free):
        return self.full_model(x, self.all_params(free))

    def expansion(self, free):
        """``E = d all / d free`` at `free` (n x n_free)."""
        return jax.jacfwd(self.all_params)(jnp.asarray(free))

    def free_indices(self) -> np.ndarray:
        return np.array([self.names.index(name) for name in self.free])

    def free_p0(self, p0, xdata, ydata, full_bounds):
        """The free parameters' start from `p0` given for all parameters (a sequence in
        the model's order or a dict by name), for the free ones only, or None (a
        model's ``guess``, else SciPy's start within `full_bounds`)."""
        n, n_free = len(self.names), len(self.free)
        if p0 is None:
            guess = getattr(self.full_model, "model", None)
            if hasattr(guess, "guess"):  # an nlsq_fn.models model
                values = dict(guess.guess(xdata, ydata))
                return np.array([float(values[name]) for name in self.free])
            return feasible_start(*full_bounds, n)[self.free_indices()]
        if isinstance(p0, Mapping):
            unknown = sorted(set(p0) - set(self.names))
            if unknown:
                raise ValueError(
                    f"`p0` names unknown parameters {unknown}; the model's parameters "
                    f"are {list(self.names)}."
                )
            missing = [name for name in self.free if name not in p0]
            guessed = {}
            if missing:
                model = getattr(self.full_model, "model", None)
                if not hasattr(model, "guess"):
                    raise ValueError(f"`p0` must give every free parameter; missing {missing}.")
                guessed = dict(model.guess(xdata, ydata))
            values = [p0[name] if name in p0 else guessed[name] for name in self.free]
            return _as_vector(values)
        count = count_values(p0)
        if count == n:
            return _as_vector(p0)[self.free_indices()]
        if count == n_free:
            return _as_vector(p0)
        raise ValueError(
            f"`p0` has {count} values; give one for each of the model's {n} parameters "
            f"{list(self.names)} (those of fixed and tied ones are ignored), one for each "
            f"of the {n_free} free ones {list(self.free)}, or a dict by name."
        )

    def bounds_of_all(self, bounds) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)`` of every parameter from `bounds` given for all parameters
        (a pair of scalars or length-n sequences, a `scipy.optimize.Bounds`, a dict by
        name) or for the free ones only (a length-n_free pair or a dict). Checks that
        each fixed value lies within its bounds and that no tie is bounded."""
        n = len(self.names)
        bounds = as_bounds(bounds)
        lower, upper = np.full(n, -np.inf), np.full(n, np.inf)
        if isinstance(bounds, dict):
            unknown = sorted(set(bounds) - set(self.names))
            if unknown:
                raise ValueError(
                    f"`bounds` names unknown parameters {unknown}; the model's parameters "
                    f"are {list(self.names)}."
                )
            for name, (low, high) in bounds.items():
                i = self.names.index(name)
                lower[i], upper[i] = low, high
        else:
            given = []
            for side in bounds:
                side = np.asarray(side, dtype=float)
                if side.size not in (1, n, len(self.free)):
                    raise ValueError(
                        f"`bounds` has a side of {side.size} values; give a scalar, one "
                        f"for each of the model's {n} parameters {list(self.names)} or "
                        f"one for each of the {len(self.free)} free ones {list(self.free)}."
                    )
                given.append(side)
            ties = [self.names.index(name) for name in self.tie_names]
            for side, target in zip(given, (lower, upper), strict=True):
                if side.size == len(self.free) and side.size != n:
                    target[self.free_indices()] = side
                else:
                    target[:] = np.broadcast_to(side.ravel(), (n,))
                    if side.size == 1:  # one bound for all: the free and fixed ones
                        target[ties] = np.inf if target is upper else -np.inf
        # (Traced fixed values, under jit / grad, are not checked: they have no value.)
        checked = self.fixed_names if is_concrete(self.fixed_values) else ()
        fixed = np.asarray(self.fixed_values if checked else [], dtype=float)
        for name, value in zip(checked, fixed, strict=True):
            i = self.names.index(name)
            if not lower[i] <= value <= upper[i]:
                raise ValueError(
                    f"The fixed value {value:g} of parameter {name!r} is outside its "
                    f"bounds [{lower[i]:g}, {upper[i]:g}]."
                )
        for name in self.tie_names:
            i = self.names.index(name)
            if np.isfinite(lower[i]) or np.isfinite(upper[i]):
                raise ValueError(
                    f"Parameter {name!r} is tied, and a tie cannot be bounded (its "
                    f"bounds are [{lower[i]:g}, {upper[i]:g}]): bound the parameters it "
                    "depends on instead."
                )
        return lower, upper

    def free_bounds(self, bounds) -> tuple[np.ndarray, np.ndarray]:
        lower, upper = self.bounds_of_all(bounds)
        free = self.free_indices()
        return lower[free], upper[free]

    def expand_covariance(self, popt_free, pcov_free):
        """``E C Eᵀ``, with ``0 · inf = 0``: a fixed parameter's variance stays 0 even
        when the free covariance could not be estimated."""
        expansion = self.expansion(popt_free)
        if not is_concrete(pcov_free, expansion):
            return expansion @ pcov_free @ expansion.T
        expansion, pcov_free = np.asarray(expansion), np.asarray(pcov_free)
        finite = np.isfinite(pcov_free)
        full = expansion @ np.where(finite, pcov_free, 0.0) @ expansion.T
        used = (expansion != 0).astype(float)
        touched = used @ (~finite).astype(float) @ used.T > 0
        full[touched] = np.inf
        return full

    def embed(self, free_columns, fill=0):
        """Arrays over the free parameters (last axis) as arrays over all of them, with
        `fill` for the fixed and tied ones."""
        free_columns = np.asarray(free_columns)
        shape = free_columns.shape[:-1] + (len(self.names),)
        full = np.full(shape, fill, dtype=free_columns.dtype)
        full[..., self.free_indices()] = free_columns
        return full

    def embed_traced(self, free_columns):
        selection = np.zeros((len(self.free), len(self.names)))
        selection[np.arange(len(self.free)), self.free_indices()] = 1.0
        return (free_columns @ selection).astype(free_columns.dtype)


def _as_vector(values):
    if is_concrete(values):
        vector = np.asarray(values, dtype=float).ravel()
        return vector
    return (
        jnp.ravel(jnp.stack([jnp.asarray(v) for v in values]))
        if isinstance(values, (list, tuple))
        else jnp.ravel(jnp.asarray(values))
    )


def _names_in(argument: str, given: Mapping, names: tuple[str, ...]) -> None:
    unknown = [name for name in given if name not in names]
    if unknown:
        raise ValueError(
            f"`{argument}` names unknown parameter {unknown[0]!r}; the model's parameters "
            f"are {list(names)}."
        )


def parameter_structure(
    f: Callable, p0, fixed: Mapping | None, ties: Mapping | None, param_style=None
) -> StructuredModel:
    """The `StructuredModel` of `f` with these fixed values and ties; the parameters'
    names come from `f`'s signature (``f(x, a, b, c)``), its ``param_names``
    (`nlsq_fn.models`), or ``params[i]`` for ``model(x, params)`` (then `p0` counts
    them)."""
    fixed, ties = dict(fixed or {}), dict(ties or {})
    full_model, names = vector_model(f, p0, param_style)
    if names is None:
        raise ValueError(
            "`fixed` and `ties` name parameters, but this model's parameters have no names "
            "(a model(x, params) without `p0`, or f(x, *args)): write f(x, a, b, ...), or "
            "give `p0` to count them (then they are named params[0], params[1], ...)."
        )
    names = tuple(names)
    _names_in("fixed", fixed, names)
    _names_in("ties", ties, names)
    both = [name for name in fixed if name in ties]
    if both:
        raise ValueError(f"Parameter {both[0]!r} is both fixed and tied; give it once.")
    for name, tie in ties.items():
        if not callable(tie):
            raise ValueError(
                f"The tie of parameter {name!r} must be a function of the parameters "
                f"(e.g. lambda p: 2 * p['a']), got {type(tie).__name__}."
            )
    values = []
    for name, value in fixed.items():
        value = np.asarray(value, dtype=float) if is_concrete(value) else jnp.asarray(value)
        if np.size(value) != 1:
            raise ValueError(
                f"The fixed value of parameter {name!r} must be one number, got shape "
                f"{np.shape(value)}."
            )
        if is_concrete(value) and not np.isfinite(value):
            raise ValueError(f"The fixed value of parameter {name!r} is {float(value)}.")
        values.append(jnp.reshape(value, ()) if not is_concrete(value) else float(value))
    free = tuple(name for name in names if name not in fixed and name not in ties)
    if not free:
        raise ValueError("Every parameter is fixed or tied: nothing is left to fit.")
    fixed_values = np.asarray(values, dtype=float) if is_concrete(values) else jnp.stack(values)
    if not values:
        fixed_values = np.zeros(0)
    model = StructuredModel(
        full_model,
        names,
        free,
        tuple(fixed),
        fixed_values,
        tuple(ties),
        tuple(ties.values()),
    )
    _check_ties(model)
    return model


def _check_ties(model: StructuredModel) -> None:
    """Each tie, evaluated once (abstractly) at zeros: a clear error for a tie that
    reads a tied or unknown name or does not return one number."""
    for name, tie in zip(model.tie_names, model.tie_functions, strict=True):
        known = {other: jnp.zeros(()) for other in model.free + model.fixed_names}
        try:
            shape = jax.eval_shape(tie, known).shape
        except KeyError as error:
            raise ValueError(
                f"The tie of parameter {name!r} reads {error.args[0]!r}, which is not a "
                f"free or fixed parameter (free: {list(model.free)}, fixed: "
                f"{list(model.fixed_names)}; ties cannot read other ties)."
            ) from None
        if int(np.prod(shape)) != 1:
            raise ValueError(
                f"The tie of parameter {name!r} must return one number, got shape {shape}."
            )


def expand_result(model: StructuredModel, result):
    """The `CurveFitResult` of the free parameters as one of all parameters: `popt`,
    `pcov` (``E C Eᵀ``), `p0` and bounds over all of them; `jac`, `grad` and
    `active_mask` are zero for the fixed and tied ones (the fit did not vary them);
    `fixed` and `tied` name them (and `n_params`, the degrees of freedom and the
    statistics count the free ones only)."""
    from .._results.fit_result import CurveFitResult  # (imports the report, which is heavier)

    free_popt = np.asarray(result.popt, dtype=float)
    lower = model.embed(np.asarray(result.lower, dtype=float), fill=-np.inf)
    upper = model.embed(np.asarray(result.upper, dtype=float), fill=np.inf)
    for name, value in zip(model.fixed_names, np.asarray(model.fixed_values), strict=True):
        i = model.names.index(name)
        lower[i] = upper[i] = value
    fields = {
        name: getattr(result, name)
        for name in (
            "cost",
            "fun",
            "optimality",
            "nfev",
            "njev",
            "nit",
            "status",
            "success",
            "initial_cost",
            "rank",
            "singular_values",
            "method",
            "loss",
            "loss_function",
        )
        if hasattr(result, name)
    }
    return CurveFitResult(
        model=model.full_model,
        names=model.names,
        xdata=result.xdata,
        ydata=result.ydata,
        sigma=result.sigma,
        absolute_sigma=result.absolute_sigma,
        pcov=model.expand_covariance(free_popt, result.pcov),
        x=np.asarray(model.all_params(free_popt)),
        jac=model.embed(np.asarray(result.jac)),
        grad=model.embed(np.asarray(result.grad)),
        active_mask=model.embed(np.asarray(result.active_mask)),
        lower=lower,
        upper=upper,
        p0=np.asarray(model.all_params(np.asarray(result.p0, dtype=float))),
        fixed=model.fixed_names,
        tied=model.tie_names,
        structure=model,  # (the fixed values and ties: for `profile_interval`)
        **fields,
    )


def expand_solution(model: StructuredModel, fitted):
    """A traced fit's `FitSolution` over all parameters (under jit / vmap / grad):
    `popt`, `pcov` and `p0` through the map free -> all, `jac`, `grad` and
    `active_mask` with zero columns for the fixed and tied parameters."""
    solution = fitted.solution
    x = model.all_params(solution.x)
    solution = eqx.tree_at(
        lambda s: (s.x, s.jac, s.grad, s.active_mask),
        solution,
        (
            x,
            model.embed_traced(solution.jac),
            model.embed_traced(solution.grad),
            model.embed_traced(solution.active_mask),
        ),
    )
    pcov = model.expand_covariance(fitted.solution.x, fitted.pcov)
    p0 = None if fitted.p0 is None else model.all_params(fitted.p0)
    return eqx.tree_at(
        lambda f: (f.solution, f.pcov, f.p0),
        fitted,
        (solution, pcov, p0),
        is_leaf=lambda leaf: leaf is None,
    )
