"""Models written with NumPy (``scipy.special``, ``np.`` calls): run on the host.

JAX cannot trace such a model; `init` notices when tracing it fails (a tracer converted
to NumPy, used as a Python bool, assigned into...) while calling it on concrete NumPy
arrays works, and then the fit
evaluates it through `jax.pure_callback` with finite-difference Jacobians (SciPy's
``"2-point"`` unless another method is asked for). The loop stays compiled, but every
evaluation is a Python call of the model, as in SciPy, so the fit runs at SciPy's
speed; it is not differentiable (JAX has no derivatives of a host call). A `jac`
function written with NumPy is run on the host the same way.
"""

import collections
import contextlib
import hashlib
import threading
import traceback
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._misc import warn_user
from .host_errors import host_callback, stand_in


class HostModelWarning(UserWarning):
    """The model is not traceable by JAX and runs on the host, at SciPy's speed."""


HOST_MODEL_MESSAGE = (
    "The model could not be traced by JAX (it uses NumPy or SciPy functions), so it runs "
    "on the host through jax.pure_callback with finite-difference Jacobians: this fit "
    "runs at SciPy's speed. Write the model with jax.numpy for compiled speed, exact "
    "Jacobians, jax.vmap and derivatives of the fit."
)


def warn_host_model() -> None:
    warn_user(HOST_MODEL_MESSAGE, HostModelWarning)


def _numpy_copies(tree):
    # Writable copies, as SciPy passes: the model may write into its inputs.
    return jax.tree.map(np.array, tree)


def call_on_host(model: Callable, x, params) -> np.ndarray:
    """`model` called on NumPy copies of its (concrete) inputs (or its value there from
    an earlier call of this fit: see `reusing_evaluations`)."""
    return np.array(_evaluated(model, *_numpy_copies((x, params))))


# The values of the models of the fits running now (`reusing_evaluations`) at their last
# points, by model (equal models: JAX's `jit` passes a copy of the front end's own).
_evaluations: dict = {}
_POINTS_KEPT = 16  # the solution is the last accepted point: a few trials back at most
_evaluations_lock = threading.Lock()  # callbacks may run on JAX's own threads


@contextlib.contextmanager
def reusing_evaluations(model: Callable):
    """Within the block, `model` run on the host is called once at a point, as SciPy
    calls `fun`: the front end's call at the start (for the output's shape) is the fit's
    first evaluation, and the final summary's values at the start and at the solution
    are those the loop computed. The values are forgotten at the end of the block (a
    model may depend on state that changes between fits)."""
    try:
        hash(model)
    except TypeError:  # (a model holding arrays: called again)
        yield
        return
    with _evaluations_lock:
        _evaluations[model] = collections.OrderedDict()
    try:
        yield
    finally:
        with _evaluations_lock:
            _evaluations.pop(model, None)
        _forget_failed_traces(model)


def _forget_failed_traces(model: Callable) -> None:
    """Drop `traced_shape`'s remembered failures of `model`: each fit of a NumPy model
    then traces it once (one call of the user's function, counted in ``nfev``), the
    same count in every fit (SciPy's tests compare two fits' ``nfev``)."""
    for key in list(_shapes):
        try:
            if _shapes[key][1] is not None and key[0] == model:
                del _shapes[key]
        except Exception:  # noqa: BLE001, S112 - a function that cannot be compared
            continue


def _point_key(x, params) -> bytes:
    digest = hashlib.blake2b(digest_size=20)
    leaves, tree = jax.tree.flatten((x, params))
    digest.update(repr(tree).encode())
    for leaf in leaves:
        leaf = np.ascontiguousarray(leaf)
        digest.update(repr((leaf.shape, leaf.dtype.str)).encode())
        digest.update(leaf.tobytes())
    return digest.digest()


def _kept_values(model: Callable):
    try:
        return _evaluations.get(model)
    except Exception:  # noqa: BLE001 - not hashable, or not comparable: never kept
        return None


def _evaluated(model: Callable, x, params):
    """``model(x, params)`` on NumPy inputs, or its value at this point earlier in the
    fit (`reusing_evaluations`)."""
    with _evaluations_lock:
        kept = _kept_values(model) if _evaluations else None
    if kept is None:
        return model(x, params)
    key = _point_key(x, params)  # (before the call: the model may write into its inputs)
    with _evaluations_lock:
        if key in kept:
            kept.move_to_end(key)
            return kept[key]
    value = np.array(model(x, params))  # a copy: the model may keep and change its own
    with _evaluations_lock:
        kept[key] = value
        if len(kept) > _POINTS_KEPT:
            kept.popitem(last=False)
    return value


# What tracing a function raises when it applies NumPy to JAX's arrays (or branches on
# them): such a function runs on the host, where what it raises is the user's own.
NUMPY_TRACING_ERRORS = (
    jax.errors.TracerArrayConversionError,
    jax.errors.ConcretizationTypeError,  # and TracerBoolConversionError
    jax.errors.TracerIntegerConversionError,
)


# `traced_shape`'s results for the last functions and argument shapes seen: a refit of
# the same model on new data of the same shapes need not trace the model again (JAX's
# own jit cache makes the same assumption: a function's trace depends on its identity
# and its arguments' shapes).
_shapes: collections.OrderedDict = collections.OrderedDict()
_SHAPES_KEPT = 64


def _abstract_key(function, args):
    leaves, tree = jax.tree.flatten(args)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in leaves):
        return None
    described = []
    for leaf in leaves:
        if isinstance(leaf, (np.ndarray, jax.Array)):  # traced alike: shape, dtype
            weak = bool(getattr(leaf, "weak_type", False))
            described.append((tuple(leaf.shape), str(leaf.dtype), weak))
        elif hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
            described.append((tuple(leaf.shape), str(leaf.dtype), type(leaf).__name__))
        else:
            described.append((type(leaf), leaf))
    key = (function, tree, tuple(described), bool(jax.config.jax_enable_x64))
    try:
        hash(key)
    except TypeError:
        return None
    return key


def traced_shape(function: Callable, *args):
    """``(jax.eval_shape(function, *args), None)``, or ``(None, the exception)`` when
    JAX cannot trace `function` (remembered for the same function and argument shapes)."""
    key = _abstract_key(function, args)
    if _known(key):
        _shapes.move_to_end(key)
        return _shapes[key]
    found: tuple
    try:
        found = jax.eval_shape(function, *args), None
    except Exception as error:
        # Kept, so that a NumPy function is not traced again by the next check of the
        # same fit (each trace is a call of the user's code; `reusing_evaluations`
        # forgets it after the fit), without its frames' locals (arguments).
        traceback.clear_frames(error.__traceback__)
        found = None, error
    if key is not None:
        _shapes[key] = found
        if len(_shapes) > _SHAPES_KEPT:
            _shapes.popitem(last=False)
    return found


def shape_is_known(function: Callable, *args) -> bool:
    """Whether `traced_shape` has the answer for these arguments' shapes without tracing
    (calling) `function` again."""
    return _known(_abstract_key(function, args))


def _known(key) -> bool:
    try:
        return key is not None and key in _shapes
    except Exception:  # noqa: BLE001 - a function whose fields cannot be compared
        return False


def call_untraceable(call: Callable, tracing_error: Exception, failed: Callable):
    """``call()``, a function that JAX could not trace run on the host. If it fails
    there too, its own exception reaches the caller unchanged (through the front
    end's `reraise_host_errors`) when tracing failed only for its use of NumPy (SciPy
    passes on what the user's function raises); otherwise ``failed(host_error)``, a
    clear error, chained to the tracing error."""
    try:
        return call()
    except Exception as host_error:
        if not isinstance(tracing_error, NUMPY_TRACING_ERRORS):
            raise failed(host_error) from tracing_error
        raise stand_in(host_error) from host_error


def traced_or_on_host(
    function: Callable, x, params, host_call: Callable, failed: Callable, concrete: bool = True
):
    """``(output, on_host)``, "trace it, else run it on the host", the one rule for a
    model, a `jac` and `least_squares`' `fun`: JAX's abstract output of
    ``function(x, params)`` and False when JAX traces it; else ``host_call()`` (the
    function run on the host, with `call_on_host`, at the point the fit starts from)
    and True. ``failed(tracing_error, host_error)`` is the clear error of a function
    that fails on the host too (see `call_untraceable`), or that JAX cannot trace while
    the inputs are traced (``concrete=False``: nothing to run on the host; `host_error`
    is None)."""
    out, error = traced_shape(function, x, params)
    if error is None:
        return out, False
    if not concrete:
        raise failed(error, None) from error
    return call_untraceable(host_call, error, lambda host: failed(error, host)), True


def evaluated_on_host(model: Callable, shape: tuple[int, ...]) -> Callable:
    """`model` run on the host (`HostModel`). A front end's wrapper whose own work is
    JAX (it has ``around_host(wrap)``, as the whitening of a 2-D `sigma`) stays in JAX
    around its host-run inner model: its arrays are then inputs of the compiled fit,
    not constants captured by the callback (which, traced, would leak)."""
    around_host = getattr(model, "around_host", None)
    if around_host is not None:
        return around_host(lambda inner: evaluated_on_host(inner, shape))
    return HostModel(model, shape)


class HostModel(eqx.Module):
    """``model(x, params)`` evaluated in Python on NumPy arrays via `jax.pure_callback`
    (one call per evaluation; under `jax.vmap` one after the other)."""

    model: Callable = eqx.field(static=True)
    shape: tuple[int, ...] = eqx.field(static=True)

    def __call__(self, x, params):
        dtype = jnp.result_type(*jax.tree.leaves(params), float)

        def on_host(x, params):  # called with JAX arrays: give the model NumPy ones
            return np.asarray(_evaluated(self.model, *_numpy_copies((x, params))), dtype=dtype)

        return host_callback(
            on_host,
            jax.ShapeDtypeStruct(self.shape, dtype),
            x,
            params,
            vmap_method="sequential",
        )
