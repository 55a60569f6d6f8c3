"""NLSQ's ``LeastSquares().least_squares(fun, x0, ...)``: a thin layer over
`least_squares` (SciPy's interface). NLSQ's constructor options (stability guards,
diagnostics, an SVD size limit) are accepted and change nothing; of its extra call
keywords, ``jacobian_mode`` picks JAX's forward or reverse mode and ``timeit`` is
ignored."""

import numpy as np

# NLSQ's `LeastSquares.__init__` keywords.
NLSQ_SOLVER_OPTIONS = frozenset(
    {
        "enable_stability",
        "enable_diagnostics",
        "max_jacobian_elements_for_svd",
    }
)
# NLSQ's call keywords for its own internals (curve_fit's data, masks, pre-checked
# bounds), accepted and unused by a direct call.
NLSQ_INTERNAL_KEYWORDS = frozenset(
    {
        "xdata",
        "ydata",
        "data_mask",
        "transform",
        "prepared_bounds",
    }
)
# NLSQ's jacobian_mode -> least_squares' `jac` (None: JAX's own choice).
_JACOBIAN_MODES = {"auto": None, "fwd": "fwd", "rev": "rev", None: None}


class LeastSquares:
    """NLSQ's least-squares solver object; ``.least_squares(...)`` is
    `nlsq_fn.least_squares`."""

    def __init__(self, **options):
        unknown = sorted(set(options) - NLSQ_SOLVER_OPTIONS)
        if unknown:
            raise TypeError(f"LeastSquares() got an unexpected keyword argument {unknown[0]!r}.")
        self.options = options

    def least_squares(
        self,
        fun,
        x0,
        jac=None,
        bounds=(-np.inf, np.inf),
        method="trf",
        ftol=1e-8,
        xtol=1e-8,
        gtol=1e-8,
        x_scale=None,
        loss="linear",
        f_scale=1.0,
        diff_step=None,
        tr_solver=None,
        tr_options=None,
        jac_sparsity=None,
        max_nfev=None,
        verbose=0,
        *,
        jacobian_mode=None,
        timeit=False,
        callback=None,
        args=(),
        kwargs=None,
        **nlsq_internal,
    ):
        """``scipy.optimize.least_squares(fun, x0, ...)`` (see
        `nlsq_fn.least_squares`)."""
        from .least_squares import least_squares

        del timeit  # NLSQ's timing
        unknown = sorted(set(nlsq_internal) - NLSQ_INTERNAL_KEYWORDS)
        if unknown:
            raise TypeError(f"least_squares() got an unexpected keyword argument {unknown[0]!r}.")
        if jacobian_mode not in _JACOBIAN_MODES:
            raise ValueError(
                f"`jacobian_mode` must be 'auto', 'fwd' or 'rev', got {jacobian_mode!r}."
            )
        if jac is None:
            jac = _JACOBIAN_MODES[jacobian_mode]
        return least_squares(
            fun,
            x0,
            jac=jac,
            bounds=bounds,
            method=method,
            ftol=ftol,
            xtol=xtol,
            gtol=gtol,
            x_scale=x_scale,
            loss=loss,
            f_scale=f_scale,
            diff_step=diff_step,
            tr_solver=tr_solver,
            tr_options=tr_options,
            jac_sparsity=jac_sparsity,
            max_nfev=max_nfev,
            verbose=verbose,
            args=args,
            kwargs=kwargs,
            callback=callback,
        )
