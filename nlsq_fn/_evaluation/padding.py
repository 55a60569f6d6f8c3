"""Padding a fit's data to a size bucket (`CurveFit(pad=True)`, streamed chunks) along
the points axis of each `x` array (`_problem.data.points_axis`), and the check that
padding changes nothing the model sees."""

import jax
import jax.numpy as jnp
import numpy as np

from .._problem.data import Data, points_axis
from .chunking import probe_direction, same_on_pieces, values_agree, values_and_slopes
from .compiled import compiled


def has_points_axis(xdata, m) -> bool:
    """Whether some array in `xdata` runs along the points (so a padded `x` gives a
    padded prediction); a model that ignores `x` (SciPy allows ``xdata=None``) is not
    padded."""
    return any(points_axis(leaf, m) is not None for leaf in jax.tree.leaves(xdata))


def pad_points(leaf, m, size):
    leaf = np.asarray(leaf)
    axis = points_axis(leaf, m)
    if axis is None or size == m:
        return leaf
    widths = [(0, 0)] * leaf.ndim
    widths[axis] = (0, size - m)
    return np.pad(leaf, widths, mode="edge")  # repeat a real input: the model stays finite


def check_padding_changes_nothing(model, x, padded: Data, x_padded, p0, m, first: bool):
    """Raise unless the model, on the padded data as the fit evaluates it (the padded
    rows masked: `Data.model_x`), gives on the first `m` points what it gives on `x`
    at `p0`, in values and slopes: padding must never change what the model sees.

    On the first padded fit of a `CurveFit` that is checked exactly, against the model
    on the unpadded `x`. Later fits must not compile anything for a new length, so they
    are checked at the padded size: the model's first `m` outputs must not move when
    the padded rows hold other inputs (those of the last point instead of the first),
    which shows that they do not depend on the padding (a mean, a maximum, a sum of
    all points would move). Where both paddings are the same inputs, exactly again."""
    fitted_x = padded.model_x
    rows = slice(0, m)
    distinct = any(
        not np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(jax.tree.leaves(fitted_x), jax.tree.leaves(x_padded), strict=True)
    )
    if first or not distinct:
        same = same_on_pieces(model, x, p0, [(fitted_x, rows, rows)])
    else:
        same = same_on_pieces(model, fitted_x, p0, [(x_padded, rows, rows)])
    if same:
        return
    raise ValueError(
        f"pad=True needs a pointwise model (each output depending only on its own "
        f"point), but on these {m} points padded to {padded.y.shape[0]} this model gives "
        "other values (it uses `x` as a whole, e.g. x.mean(), x.size or a convolution). "
        "Use pad=False."
    )


@compiled
def padding_moves(model, batch: Data, starts):
    """For a batch padded by `pad_datasets` (a leading batch axis on every leaf, `mask`
    False at the padding) and a start per member: whether each member's values or
    slopes at its counted points move between the padding the fit evaluates
    (`Data.model_x`: the first counted point's inputs) and the padding's own inputs
    (the last point repeated). The batched form of `check_padding_changes_nothing`'s
    later check: one program for every member, whatever its length."""

    def moves(data, params):
        direction = probe_direction(params)
        fitted = values_and_slopes(model, data.model_x, params, direction)
        other = values_and_slopes(model, data.x, params, direction)
        agree = [
            values_agree(a, b, data.mask, nan_matches_nan=True)
            for a, b in zip(fitted, other, strict=True)
        ]
        return ~jnp.all(jnp.stack(agree))

    return jax.vmap(moves)(batch, starts)
