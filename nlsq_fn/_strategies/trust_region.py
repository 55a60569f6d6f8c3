"""The trust-region subproblem and the bookkeeping shared by the strategies.

All quantities here are ``n``-sized: the strategies never see the ``m`` residuals, only
the square factor ``r`` (with ``rᵀr = JᵀJ``) of the linearised problem.
"""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

# Status codes, as in `scipy.optimize.least_squares`, plus "still iterating", "stopped
# by the user's callback" and "chunks disagree" (`chunk_size="auto"` under `jax.jit`).
CHUNKS_DIFFER = -4
STOPPED = -3
RUNNING = -2
IMPROPER_INPUT = -1
MAX_NFEV = 0
GTOL = 1
FTOL = 2
XTOL = 3
FTOL_AND_XTOL = 4

STATUS_MESSAGES = {
    CHUNKS_DIFFER: (
        "chunk_size='auto' chose to evaluate the model in chunks, but on these data it "
        "gives other values in chunks than on all the points at once (it uses x as a "
        "whole: x.mean(), x.max(), a cumulative sum...). Pass chunk_size=None."
    ),
    STOPPED: "Stopped by the callback.",
    RUNNING: "The solver has not finished.",
    IMPROPER_INPUT: (
        "Improper input: NaN or inf in the data or in the model, its Jacobian or the "
        "cost (which may overflow) at the initial parameters; or sigma <= 0, every point "
        "masked, NaN bounds, lower >= upper, p0 outside the bounds, x_scale <= 0 or "
        "f_scale <= 0."
    ),
    MAX_NFEV: "The maximum number of function evaluations is exceeded.",
    GTOL: "`gtol` termination condition is satisfied.",
    FTOL: "`ftol` termination condition is satisfied.",
    XTOL: "`xtol` termination condition is satisfied.",
    FTOL_AND_XTOL: "Both `ftol` and `xtol` termination conditions are satisfied.",
}


def solve_subproblem(
    s: Float[Array, " n"],
    vt: Float[Array, "n n"],
    suf: Float[Array, " n"],
    radius: Float[Array, ""],
    alpha: Float[Array, ""],
    n_rows: Int[Array, ""],
    *,
    rtol: float,
    gauss_newton_slack: float,
    to_boundary: bool,
    last_evaluated: bool = False,
) -> tuple[Float[Array, " n"], Float[Array, ""]]:
    """Minimise ``||J p + f||`` subject to ``||p|| <= radius`` (Moré's method).

    ``J = U diag(s) Vᵀ`` is given by its singular values `s`, ``Vᵀ`` as `vt` and
    ``suf = s * Uᵀf = Vᵀ Jᵀf``. The Gauss–Newton step is taken when ``J`` has full rank
    and the step is within ``gauss_newton_slack * radius``; otherwise the
    Levenberg–Marquardt parameter ``alpha`` solving ``||p(alpha)|| = radius`` is found
    by safeguarded Newton iterations on the secular equation, started from the previous
    `alpha`, until ``| ||p|| - radius | < rtol * radius``. SciPy's TRF takes one more
    Newton update after that test and rescales the step onto the boundary
    (`to_boundary`); MINPACK's ``lmpar`` keeps the last ``alpha`` it tested
    (`last_evaluated`), which is never negative. Returns ``(p, alpha)``.
    """
    n = s.shape[0]
    eps = jnp.finfo(s.dtype).eps
    s2 = s**2
    full_rank = (n_rows >= n) & (s[-1] > eps * n_rows * s[0])
    safe_s2 = jnp.where(s2 > 0, s2, 1.0)
    p_gauss_newton = -vt.T @ jnp.where(s2 > 0, suf / safe_s2, 0.0)
    take_gauss_newton = full_rank & (jnp.linalg.norm(p_gauss_newton) <= gauss_newton_slack * radius)

    def phi_and_derivative(alpha):
        denom = s2 + alpha
        p_norm = jnp.linalg.norm(suf / denom)
        safe_p_norm = jnp.where(p_norm > 0, p_norm, 1.0)
        phi = p_norm - radius
        phi_prime = -jnp.sum(suf**2 / denom**3) / safe_p_norm
        return phi, jnp.where(phi_prime == 0, -1.0, phi_prime)

    alpha_upper = jnp.linalg.norm(suf) / radius
    phi0, phi0_prime = phi_and_derivative(jnp.where(full_rank, 0.0, 1.0))
    alpha_lower = jnp.where(full_rank, -phi0 / phi0_prime, 0.0)

    alpha, evaluated = secular_newton(
        phi_and_derivative, radius, alpha, alpha_lower, alpha_upper, full_rank, rtol
    )
    if last_evaluated:
        alpha = evaluated
    p = -vt.T @ (suf / (s2 + alpha))
    if to_boundary:
        p_norm = jnp.linalg.norm(p)
        p = p * jnp.where(p_norm > 0, radius / jnp.where(p_norm > 0, p_norm, 1.0), 1.0)
    p = jnp.where(take_gauss_newton, p_gauss_newton, p)
    return p, jnp.where(take_gauss_newton, 0.0, alpha)


def secular_newton(
    phi_and_derivative, radius, alpha, alpha_lower, alpha_upper, full_rank, rtol, skip=False
):
    """Moré's safeguarded Newton iterations on ``phi(alpha) = ||p(alpha)|| - radius``,
    from the previous `alpha` within ``[alpha_lower, alpha_upper]``, until
    ``|phi| < rtol * radius`` (at most 10, as SciPy). `phi_and_derivative` may compute
    ``p(alpha)`` any way (an SVD, a structured factorization). `skip`: the caller
    discards the result (it takes the Gauss–Newton step), so a `vmap`-ed batch need not
    wait for it. Returns ``(alpha after the last Newton update, the last alpha
    evaluated)``."""

    def reset(lower, upper):
        return jnp.maximum(0.001 * upper, jnp.sqrt(lower * upper))

    alpha = jnp.where(~full_rank & (alpha == 0), reset(alpha_lower, alpha_upper), alpha)

    def newton(carry):
        alpha, evaluated, lower, upper, done, count = carry
        alpha_try = jnp.where((alpha < lower) | (alpha > upper), reset(lower, upper), alpha)
        phi, phi_prime = phi_and_derivative(alpha_try)
        new_upper = jnp.where(phi < 0, alpha_try, upper)
        ratio = phi / phi_prime
        new_lower = jnp.maximum(lower, alpha_try - ratio)
        new_alpha = alpha_try - (phi + radius) * ratio / radius
        finished = jnp.abs(phi) < rtol * radius
        keep = lambda old, new: jnp.where(done, old, new)  # noqa: E731
        return (
            keep(alpha, new_alpha),
            keep(evaluated, alpha_try),
            keep(lower, new_lower),
            keep(upper, new_upper),
            done | finished,
            count + 1,
        )

    # A `vmap`-ed batch stops when all members are done.
    alpha, evaluated, _, _, _, _ = jax.lax.while_loop(
        lambda carry: ~carry[4] & (carry[5] < 10),
        newton,
        (alpha, alpha, alpha_lower, alpha_upper, jnp.asarray(skip), 0),
    )
    return alpha, evaluated


def update_radius(
    radius, actual_reduction, predicted_reduction, step_norm, bound_hit
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """SciPy's radius rule: shrink to a quarter of the step when the model was poor
    (ratio < 0.25), double when it was good (> 0.75) and the step hit the boundary."""
    safe_predicted = jnp.where(predicted_reduction > 0, predicted_reduction, 1.0)
    ratio = jnp.where(
        predicted_reduction > 0,
        actual_reduction / safe_predicted,
        jnp.where((predicted_reduction == 0) & (actual_reduction == 0), 1.0, 0.0),
    )
    radius = jnp.where(ratio < 0.25, 0.25 * step_norm, radius)
    radius = jnp.where((ratio > 0.75) & bound_hit, 2.0 * radius, radius)
    return radius, ratio


def termination_status(
    cost_reduction, cost, step_norm, x_norm, ratio, ftol, xtol
) -> Int[Array, ""]:
    """`FTOL`, `XTOL`, `FTOL_AND_XTOL` or `RUNNING`, by SciPy's relative tests."""
    ftol_ok = (cost_reduction < ftol * cost) & (ratio > 0.25)
    xtol_ok = step_norm < xtol * (xtol + x_norm)
    return jnp.where(
        ftol_ok & xtol_ok,
        FTOL_AND_XTOL,
        jnp.where(ftol_ok, FTOL, jnp.where(xtol_ok, XTOL, RUNNING)),
    )


def quadratic_value(jac_factor, g, step, diag=None) -> Float[Array, ""]:
    """``0.5 * (||J s||² + sᵀ diag s) + gᵀs``: the model's change of the cost."""
    js = jac_factor @ step
    q = jnp.dot(js, js)
    if diag is not None:
        q = q + jnp.dot(step * diag, step)
    return 0.5 * q + jnp.dot(g, step)


def quadratic_along(jac_factor, g, direction, diag, origin):
    """Coefficients ``(a, b, c)`` of the model ``a t² + b t + c`` along
    ``origin + t * direction``."""
    v = jac_factor @ direction
    u = jac_factor @ origin
    a = 0.5 * (jnp.dot(v, v) + jnp.dot(direction * diag, direction))
    b = jnp.dot(g, direction) + jnp.dot(u, v) + jnp.dot(origin * diag, direction)
    c = 0.5 * (jnp.dot(u, u) + jnp.dot(origin * diag, origin)) + jnp.dot(g, origin)
    return a, b, c


def minimize_quadratic_1d(a, b, lower, upper, c=0.0):
    """Minimiser and minimum of ``a t² + b t + c`` over ``[lower, upper]``."""
    safe_a = jnp.where(a != 0, a, 1.0)
    extremum = -0.5 * b / safe_a
    interior = (a != 0) & (lower < extremum) & (extremum < upper)
    candidates = jnp.stack([lower, upper, jnp.where(interior, extremum, lower)])
    values = candidates * (a * candidates + b) + c
    best = jnp.argmin(values)
    return candidates[best], values[best]
