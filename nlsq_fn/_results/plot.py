"""``result.plot()``: data, fitted curve, confidence band and residuals (matplotlib,
an optional dependency: ``pip install nlsq_fn[plot]``)."""

import numpy as np


def _pyplot():
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "result.plot() needs matplotlib: pip install 'nlsq_fn[plot]' "
            "(or pip install matplotlib)."
        ) from error
    return plt


def plot_fit(
    result,
    *,
    band: float | None = 0.95,
    n_curve: int = 400,
    fig=None,
    title=None,
    ax=None,
    show_residuals: bool = True,
    show_confidence: bool = True,
):
    """Plot a 1-D fit: data (with error bars when `sigma` was given), the fitted curve
    on a fine grid, the `band` confidence band (None for none) and the residuals below.
    NLSQ's keywords: `ax` draws the data and fit on that axes (no residual panel),
    ``show_residuals=False`` leaves out the residuals, ``show_confidence=False`` the
    band. Returns the matplotlib figure."""
    plt = _pyplot()
    x = result.xdata
    if isinstance(x, (tuple, dict)) or np.ndim(x) != 1 or np.ndim(result.ydata) != 1:
        raise ValueError("result.plot() draws 1-D fits only (x and y 1-D arrays).")
    x = np.asarray(x)
    if not show_confidence:
        band = None
    bottom = None
    if ax is not None:
        top, fig = ax, ax.figure
    elif show_residuals:
        if fig is None:
            fig = plt.figure(figsize=(7, 5))
        top, bottom = fig.subplots(
            2, 1, sharex=True, gridspec_kw=dict(height_ratios=[3, 1], hspace=0.05)
        )
    else:
        if fig is None:
            fig = plt.figure(figsize=(7, 4))
        top = fig.subplots()
    yerr = None if result.sigma is None else np.ravel(result.sigma)
    top.errorbar(x, result.ydata, yerr=yerr, fmt="o", ms=3, color="0.3", label="data")
    grid = np.linspace(x.min(), x.max(), n_curve)
    top.plot(grid, np.ravel(result.eval(grid)), color="C0", label="fit")
    if band is not None and np.all(np.isfinite(result.pcov)):
        lower, upper = result.confidence_band(grid, level=band)
        top.fill_between(
            grid, lower, upper, color="C0", alpha=0.25, label=f"{band:.0%} confidence band"
        )
    top.legend(loc="best")
    top.set_ylabel("y")
    if title is not None:
        top.set_title(title)
    if bottom is None:
        top.set_xlabel("x")
        return fig
    bottom.axhline(0.0, color="0.5", lw=1)
    bottom.plot(x, result.residual, "o", ms=3, color="C3")
    bottom.set_xlabel("x")
    bottom.set_ylabel("residual")
    return fig
