"""Text reports of a curve fit: a one-line repr, an lmfit-style summary and
diagnostics, each with a concrete hint."""

import dataclasses
import math

import numpy as np

# Thresholds of the diagnostics (documented in `diagnose`).
CONDITION_LIMIT = 1e10
GRADIENT_COSINE_LIMIT = 1e-4
SCALE_RATIO_LIMIT = 1e6
BIAS_Z_LIMIT = 3.0
RUNS_Z_LIMIT = -3.0
ROUNDING_LIMIT = 1e4  # residual norm, in units of eps * |weighted data|: an exact fit


@dataclasses.dataclass(frozen=True)
class Diagnostic:
    """One possible problem: a short `name`, what was found, what to do."""

    name: str
    message: str
    hint: str

    def __str__(self):
        return f"{self.name}: {self.message} Hint: {self.hint}"


def _varied(result) -> np.ndarray:
    """Whether each parameter was varied (fixed and tied ones were not)."""
    held = tuple(getattr(result, "fixed", ())) + tuple(getattr(result, "tied", ()))
    return np.array([name not in held for name in result.names])


def _most_correlated_pair(result):
    corr = np.abs(np.nan_to_num(result.correlation, nan=0.0))
    np.fill_diagonal(corr, 0.0)
    # A tie is fully correlated with what it reads by construction: not a finding.
    varied = _varied(result)
    corr[~varied, :] = 0.0
    corr[:, ~varied] = 0.0
    if corr.size <= 1:
        return None
    i, j = np.unravel_index(np.argmax(corr), corr.shape)
    return result.names[i], result.names[j], result.correlation[i, j]


def _runs_z(signs):
    """Wald–Wolfowitz runs test on residual signs: strongly negative z means long
    stretches of one sign, i.e. structure the model misses."""
    signs = signs[signs != 0]
    n_pos, n_neg = np.sum(signs > 0), np.sum(signs < 0)
    n = n_pos + n_neg
    if n_pos == 0 or n_neg == 0 or n < 10:
        return 0.0
    runs = 1 + np.sum(signs[1:] != signs[:-1])
    mean = 2 * n_pos * n_neg / n + 1
    var = (mean - 1) * (mean - 2) / (n - 1)
    return float((runs - mean) / math.sqrt(var)) if var > 0 else 0.0


def diagnose(result) -> list[Diagnostic]:
    """Checks, each reported only when it fires:

    - the fit did not succeed (status <= 0);
    - the covariance could not be estimated (``dof <= 0``);
    - Jacobian condition number ``s_max / s_min > 1e10`` (of its columns scaled to unit
      norm: correlated parameters, not units, which the last check reports) or
      rank-deficient;
    - parameters at a bound (`active_mask`);
    - a large final gradient: some free parameter's gradient cosine
      ``|g_j| / (||J_j|| ||f||) > 1e-4`` (MINPACK's scale-free measure);
    - residual bias: ``|mean(r)| > 3 std(r) / sqrt(n)`` (with a robust loss: the median,
      and the MAD as spread), or a runs test on the signs of the residuals (in x order)
      with ``z < -3`` (systematic misfit);
    - poorly scaled parameters: column norms of the Jacobian spanning more than 1e6.

    The gradient and residual checks are skipped for an exact fit (residual norm below
    ``1e4 * eps`` times that of the weighted data): rounding noise has no direction.
    """
    found = []
    names = result.names
    if not result.success:
        found.append(
            Diagnostic(
                "not converged",
                result.message,
                "raise max_nfev, try another p0 (a model's guess()), or x_scale='jac'.",
            )
        )
    if not np.all(np.isfinite(result.pcov)):
        found.append(
            Diagnostic(
                "no covariance",
                f"{result.n_points} points for {result.n_params} parameters leave no degrees "
                "of freedom to estimate the noise.",
                "add data points, fix some parameters, or pass absolute_sigma=True with "
                "known sigma.",
            )
        )
    s = result.singular_values
    condition = s[0] / s[-1] if s[-1] > 0 else math.inf
    if condition > CONDITION_LIMIT or result.rank < result.n_params:
        pair = _most_correlated_pair(result)
        detail = (
            f" The most correlated pair is ({pair[0]}, {pair[1]}) with C = {pair[2]:+.4f}."
            if pair and np.isfinite(pair[2])
            else ""
        )
        found.append(
            Diagnostic(
                "ill-conditioned",
                f"Jacobian condition number {condition:.3g} (rank {result.rank} of "
                f"{result.n_params}).{detail}",
                "the data do not determine all parameters: fix or remove one of a "
                "correlated pair, reparametrize (e.g. centre x), or add data that "
                "separates them.",
            )
        )
    for i in np.flatnonzero(result.active_mask):
        side = "lower" if result.active_mask[i] < 0 else "upper"
        bound = result.lower[i] if result.active_mask[i] < 0 else result.upper[i]
        found.append(
            Diagnostic(
                "at bound",
                f"parameter '{names[i]}' = {result.popt[i]:.6g} is at its {side} bound "
                f"{bound:.6g}; its standard error is not meaningful.",
                f"widen the {side} bound of '{names[i]}' if it is not physical, or check "
                "the model.",
            )
        )
    jac = np.asarray(result.jac)
    f_norm = np.linalg.norm(result.fun)
    # Residuals at the rounding level of the data (an exact fit) have no direction and
    # no bias worth reporting: the gradient and residual checks would only see noise.
    # A streamed fit keeps no per-point residuals: nothing for these checks to judge.
    if result.ydata is None or np.size(result.fun) == 0:
        exact = True
    else:
        weights = 1.0 if result.sigma is None else np.ravel(result.sigma)
        data_norm = np.linalg.norm(np.ravel(result.ydata) / weights)
        # The eps of the type the fit ran in (float32 with x64 off), where both the
        # residuals' rounding and the gradient's (cosine ~ eps |y| / |f|) scale.
        eps = np.finfo(np.asarray(result.fun).dtype).eps
        exact = f_norm <= ROUNDING_LIMIT * eps * data_norm
    norms = np.linalg.norm(jac, axis=0)
    free = result.active_mask == 0
    if not exact and np.any(free):
        cosines = np.abs(result.grad) / np.where(norms > 0, norms * f_norm, np.inf)
        worst = int(np.argmax(np.where(free, cosines, 0.0)))
        if cosines[worst] > GRADIENT_COSINE_LIMIT:
            found.append(
                Diagnostic(
                    "large gradient",
                    f"the cost still decreases along '{names[worst]}' (gradient cosine "
                    f"{cosines[worst]:.2e}, optimality {result.optimality:.3g}).",
                    "the fit stopped early: lower ftol/xtol/gtol, raise max_nfev, or try "
                    "x_scale='jac'.",
                )
            )
    residual = -np.ravel(result.fun)  # data minus model, weighted
    n = residual.size
    if n > 2 and not exact:
        if result.loss == "Linear":
            statistic, centre = "average", np.mean(residual)
            standard_error = np.std(residual) / math.sqrt(n)
        else:  # a robust fit ignores outliers: judge it by the median, scaled by the MAD
            statistic, centre = "median", np.median(residual)
            mad = 1.4826 * np.median(np.abs(residual - centre))
            standard_error = 1.2533 * mad / math.sqrt(n)
        bias_z = centre / standard_error if standard_error > 0 else 0.0
        if abs(bias_z) > BIAS_Z_LIMIT:
            found.append(
                Diagnostic(
                    "residual bias",
                    f"the weighted residuals (data - model) {statistic} {centre:+.3g} "
                    f"({bias_z:+.1f} standard errors from 0).",
                    "add an offset / baseline parameter, or use a robust loss if outliers "
                    "pull the fit."
                    if result.loss == "Linear"
                    else "the robust fit may sit in a poor local minimum: try another p0 or a "
                    "larger f_scale, or add an offset / baseline parameter.",
                )
            )
        x = np.asarray(result.xdata) if not isinstance(result.xdata, (tuple, dict)) else None
        if x is not None and x.shape == result.ydata.shape and result.ydata.ndim == 1:
            signs = np.sign(residual[np.argsort(x, kind="stable")])
            z = _runs_z(signs)
            if z < RUNS_Z_LIMIT:
                found.append(
                    Diagnostic(
                        "systematic residuals",
                        f"the residuals change sign too rarely along x (runs test z = {z:.1f}).",
                        "the model misses structure: check its shape, add a component (peak, "
                        "baseline slope), or plot result.plot() to see where.",
                    )
                )
    positive = norms[norms > 0]
    if positive.size > 1 and positive.max() / positive.min() > SCALE_RATIO_LIMIT:
        big, small = (
            names[int(np.argmax(norms))],
            names[int(np.argmin(np.where(norms > 0, norms, np.inf)))],
        )
        found.append(
            Diagnostic(
                "poorly scaled",
                f"the sensitivities to the parameters span "
                f"{positive.max() / positive.min():.2g} ('{big}' vs '{small}').",
                "pass x_scale='jac' (or typical magnitudes as x_scale), or rescale the "
                "parameters / x so they are of order 1.",
            )
        )
    return found


def _format(value):
    return f"{value:.6g}" if np.isfinite(value) else str(value)


def summary(result, correlation_threshold: float = 0.1, level: float = 0.95) -> str:
    """lmfit's ``fit_report`` layout, plus intervals, R², RMSE and diagnostics."""
    lines = ["[[Fit Statistics]]"]
    stats = [
        ("# fitting method", f"{result.method} (loss: {result.loss})"),
        ("# function evals", str(result.nfev)),
        ("# data points", str(result.n_points)),
        ("# variables", str(result.n_params)),
        *(
            [("# fixed, tied", f"{len(result.fixed)}, {len(result.tied)}")]
            if getattr(result, "fixed", ()) or getattr(result, "tied", ())
            else []
        ),
        ("chi-square", _format(result.chisqr)),
        ("reduced chi-square", _format(result.redchi)),
        ("Akaike info crit", _format(result.aic)),
        ("Bayesian info crit", _format(result.bic)),
        ("R-squared", _format(result.r_squared)),
        ("RMSE", _format(result.rmse)),
        ("success", str(result.success)),
        ("message", result.message),
    ]
    lines += [f"    {key:<19}= {value}" for key, value in stats]
    lines.append("[[Variables]]")
    intervals = result.conf_intervals(level)
    width = max(len(name) for name in result.names) + 1
    for i, name in enumerate(result.names):
        value, err = result.popt[i], result.perr[i]
        relative = (
            f" ({abs(err / value):.2%})" if value != 0 and np.isfinite(err) and err > 0 else ""
        )
        low, high = intervals[name]
        note = ""
        if name in getattr(result, "fixed", ()):
            note = " (fixed)"
        elif name in getattr(result, "tied", ()):
            note = " (tied)"
        elif result.active_mask[i]:
            note = " (at lower bound)" if result.active_mask[i] < 0 else " (at upper bound)"
        lines.append(
            f"    {name + ':':<{width}} {value:.8g} +/- {_format(err)}{relative} "
            f"[{level:.0%} CI: {_format(low)}, {_format(high)}] (init = "
            f"{result.p0[i]:.6g}){note}"
        )
    pairs = []
    corr = result.correlation
    varied = _varied(result)
    for i in range(len(result.names)):
        for j in range(i + 1, len(result.names)):
            if not (varied[i] and varied[j]):
                continue  # fixed: no correlation; tied: ±1 with what it reads
            if np.isfinite(corr[i, j]) and abs(corr[i, j]) >= correlation_threshold:
                pairs.append((abs(corr[i, j]), result.names[i], result.names[j], corr[i, j]))
    if pairs:
        lines.append(
            f"[[Correlations]] (unreported correlations are < {correlation_threshold:.3f})"
        )
        labels = [(f"C({a}, {b})", c) for _, a, b, c in sorted(pairs, reverse=True)]
        label_width = max(len(label) for label, _ in labels) + 1
        lines += [f"    {label:<{label_width}}= {c:+.4f}" for label, c in labels]
    diagnostics = result.diagnostics
    lines.append("[[Diagnostics]]")
    if not diagnostics:
        lines.append("    no problems found")
    for item in diagnostics:
        lines.append(f"    - {item.name}: {item.message}")
        lines.append(f"      hint: {item.hint}")
    return "\n".join(lines)


def one_line(result) -> str:
    values = ", ".join(
        f"{name}={value:.4g}±{err:.2g}"
        for name, value, err in zip(result.names, result.popt, result.perr, strict=True)
    )
    state = "success" if result.success else f"failed (status {result.status})"
    return (
        f"CurveFitResult({values}; chisqr={result.chisqr:.4g}, "
        f"redchi={result.redchi:.4g}, nfev={result.nfev}, {state})"
    )
