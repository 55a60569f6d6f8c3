"""The data a model is fitted to."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PyTree

from .._misc import as_jax_array, is_concrete


class Data(eqx.Module):
    """Observations ``y`` at inputs ``x``, with optional uncertainties and a mask.

    **Arguments:**

    - `x`: the model's input; any pytree (a 1-D axis, image coordinates, several
        columns). It is passed to the model unchanged.
    - `y`: observed values, any shape; the model must return the same shape.
    - `sigma`: standard deviations of `y` (same shape, or a scalar); residuals are
        divided by it. None means unit weights.
    - `mask`: booleans, same shape as `y`; False points count for nothing, so datasets
        of different lengths can be padded to one shape and fitted together.
    """

    x: PyTree[ArrayLike]
    y: Float[Array, "..."]
    sigma: Float[Array, "..."] | None = None
    mask: Bool[Array, "..."] | None = None

    def __init__(self, x, y, sigma=None, mask=None):
        if isinstance(x, list):  # a list is an array (SciPy's xdata), not a pytree of scalars
            try:
                x = np.asarray(x)
            except ValueError:  # ragged: a list of separate inputs
                pass
        self.x = jax.tree.map(_as_array, x)
        self.y = _as_array(y)
        self.sigma = None if sigma is None else _as_array(sigma)
        self.mask = None if mask is None else as_jax_array(mask, bool)

    @property
    def n_points(self):
        """How many observations count (the unmasked ones)."""
        if self.mask is None:
            return jnp.asarray(self.y.size)
        return jnp.sum(jnp.broadcast_to(self.mask, self.y.shape))

    @property
    def model_x(self) -> PyTree[ArrayLike]:
        """`x` as the model is evaluated on it. Where `mask` is False, the inputs of
        arrays laid out like `y` (points along the leading or trailing axes) are those of
        the first counted point: a masked point must not make the model or its
        derivatives non-finite, since ``0 * inf`` in reverse mode is NaN (the
        "double where"). Counted points see their own inputs unchanged."""
        if self.mask is None:
            return self.x
        return jax.tree.map(lambda leaf: _at_counted(leaf, self.mask), self.x)

    def weighted_residual(self, prediction: Float[Array, "..."]) -> Float[Array, " m"]:
        """``(prediction - y) / sigma``, zero at masked points, flattened."""
        y, sigma = self.y, self.sigma
        if self.mask is not None:  # masked values can't leak NaN into derivatives
            prediction = jnp.where(self.mask, prediction, 0.0)
            y = jnp.where(self.mask, y, 0.0)
            if sigma is not None:
                sigma = jnp.where(self.mask, sigma, 1.0)
        residual = prediction - y
        if sigma is not None:
            residual = residual / sigma
        if self.mask is not None:
            residual = jnp.where(self.mask, residual, 0.0)
        return residual.ravel()


def points_axis(leaf, m: int) -> int | None:
    """The axis of an `x` array that counts the `m` points: the last one in SciPy's
    ``(k, M)`` convention, else the first (one row per point, as a DataFrame). The one
    rule for SciPy's `xdata` and a stream's chunks: padding, the devices' shares of a
    chunk, the pointwise probe's halves. (`Data` itself, laid out like `y`, has its
    points along the leading axes: `model_x`, chunks of in-memory data.)"""
    shape = np.shape(leaf)
    if len(shape) == 0:
        return None
    if shape[-1] == m:
        return len(shape) - 1
    return 0 if shape[0] == m else None


def _at_counted(leaf, mask):
    """`leaf` with its masked points replaced by the first counted one (see `model_x`)."""
    shape = jnp.shape(leaf)
    first = jnp.argmax(mask.ravel())
    if shape[: mask.ndim] == mask.shape:
        rest = shape[mask.ndim :]
        keep = jnp.reshape(mask, mask.shape + (1,) * len(rest))
        fill = jnp.reshape(leaf, (-1, *rest))[first]
        return jnp.where(keep, leaf, fill)
    if mask.ndim and shape[len(shape) - mask.ndim :] == mask.shape:
        lead = shape[: len(shape) - mask.ndim]
        fill = jnp.reshape(leaf, (*lead, -1))[..., first]
        fill = jnp.reshape(fill, lead + (1,) * mask.ndim)
        return jnp.where(mask, leaf, fill)
    return leaf


def _as_array(value):
    if isinstance(value, jax.Array):
        return value
    array = np.asarray(value)
    if array.dtype.kind in "iub":
        return as_jax_array(array, jnp.result_type(float))
    return as_jax_array(array)


def sigma_shape_error(sigma_shape, y_shape, where: str = "", y_name: str = "`y`") -> ValueError:
    """The one message for a `sigma` not shaped like the values it weighs (`where` names
    the dataset or chunk, `y_name` the front end's name of `y`)."""
    return ValueError(
        f"{where}`sigma` has shape {tuple(sigma_shape)} but {y_name} has shape "
        f"{tuple(y_shape)}; they must match."
    )


def validate_data(data: Data) -> None:
    """Raise a clear error for malformed data (shapes, NaN/inf, sigma <= 0)."""
    y = data.y
    if data.sigma is not None and data.sigma.shape not in ((), y.shape):
        raise sigma_shape_error(data.sigma.shape, y.shape)
    if data.mask is not None and data.mask.shape != y.shape:
        raise ValueError(
            f"`mask` has shape {data.mask.shape} but `y` has shape {y.shape}; they must match."
        )
    if y.size == 0:
        raise ValueError("`y` is empty: there is nothing to fit.")
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise ValueError(f"`y` must be real numbers, got dtype {y.dtype}.")
    if data.sigma is not None and not jnp.issubdtype(data.sigma.dtype, jnp.floating):
        raise ValueError(f"`sigma` must be real numbers, got dtype {data.sigma.dtype}.")
    x_leaves = jax.tree.leaves(data.x)
    if (
        len(x_leaves) == 1
        and jnp.ndim(x_leaves[0]) == 1
        and y.ndim == 1
        and jnp.shape(x_leaves[0])[0] != y.shape[0]
    ):
        raise ValueError(
            f"`x` has {jnp.shape(x_leaves[0])[0]} points but `y` has {y.shape[0]}; they must match."
        )
    if not is_concrete(data):
        return
    check_data_values(y, data.model_x, data.sigma, data.mask)


def check_data_values(y, model_x, sigma=None, mask=None) -> None:
    """`validate_data`'s checks of concrete values: `y`, the inputs the model sees and
    `sigma` finite (at the counted points), `sigma` positive."""
    counted = np.ones(y.shape, bool) if mask is None else np.asarray(mask)
    if not counted.any():
        raise ValueError("Every point is masked out: there is nothing to fit.")
    if not np.all(np.isfinite(np.asarray(y)[counted])):
        raise ValueError(
            "`y` contains NaN or inf; remove those points or mask them out "
            "(curve_fit: nan_policy='omit')."
        )
    for leaf in jax.tree.leaves(model_x):  # masked points don't count
        if jnp.issubdtype(jnp.result_type(leaf), jnp.inexact) and not np.all(
            np.isfinite(np.asarray(leaf))
        ):
            raise ValueError("`x` contains NaN or inf.")
    if sigma is not None:
        sigma = np.broadcast_to(np.asarray(sigma), np.shape(y))[counted]
        if not np.all(np.isfinite(sigma)) or np.any(sigma <= 0):
            raise ValueError("`sigma` must be finite and strictly positive everywhere.")
