"""``OptimizeResult``: SciPy's result container (a dict with attribute access) that
prints like SciPy's, without importing SciPy.

The printing rules (key order, right-aligned keys, ten-character floats, arrays
abbreviated past 12 entries) follow ``scipy._lib._util._RichResult`` (BSD licence), so
``print(nf.least_squares(...))`` reads like ``print(scipy.optimize.least_squares(...))``.
"""

import numpy as np

_ORDER = [
    "message",
    "success",
    "status",
    "fun",
    "funl",
    "x",
    "xl",
    "col_ind",
    "nit",
    "lower",
    "upper",
    "eqlin",
    "ineqlin",
    "converged",
    "flag",
    "function_calls",
    "iterations",
    "root",
]


def _float_10(x) -> str:
    if np.isposinf(x):
        return "       inf"
    if np.isneginf(x):
        return "      -inf"
    if np.isnan(x):
        return "       nan"
    return np.format_float_scientific(x, precision=3, pad_left=2, unique=False)


def _indent(text: str, n: int) -> str:
    return ("\n" + " " * n).join(text.split("\n"))


def _format(value, n=0, mplus=1, sorter=None) -> str:
    if isinstance(value, dict):
        width = max(map(len, value.keys())) + mplus
        return "\n".join(
            key.rjust(width) + ": " + _indent(_format(item, width + n + 2, 0, sorter), width + 2)
            for key, item in sorter(value)
        )
    with np.printoptions(
        linewidth=76 - n, edgeitems=2, threshold=12, formatter={"float_kind": _float_10}
    ):
        return str(value)


class OptimizeResult(dict):
    """The result of `least_squares` (called eagerly): SciPy's fields as NumPy
    values, readable as attributes (``res.x``) or keys (``res["x"]``)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(name) from error

    __setattr__ = dict.__setitem__
    __delattr__ = dict.__delitem__

    def __repr__(self) -> str:
        if not self:
            return type(self).__name__ + "()"

        def position(item):
            try:
                return _ORDER.index(item[0].lower())
            except ValueError:
                return np.inf

        return _format(self, sorter=lambda d: sorted(d.items(), key=position))

    def __dir__(self):
        return list(self.keys())
