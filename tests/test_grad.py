"""Derivatives of fitted parameters (implicit function theorem) against finite differences.

The reference is independent of the implicit rule: central differences of the exact
optimum, obtained by polishing each perturbed fit with Newton steps on the robust cost
until its gradient vanishes (parameters at a bound are pinned to it exactly).
"""

import dataclasses
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import TIGHT
from jax.flatten_util import ravel_pytree

import nlsq_fn as nf

M = 40
X = np.linspace(0.1, 5.0, M)
_rng = np.random.default_rng(0)
NOISE = 0.05 * _rng.standard_normal(M)
OUTLIERS = np.where(np.arange(M) % 7 == 3, 1.5 * _rng.standard_normal(M), 0.0)
SIGMA = 0.04 + 0.03 * _rng.random(M)


def stretched_decay(t, p, h):
    return p[0] * jnp.exp(-p[1] * t**h) + p[2]


Y_CLEAN = np.asarray(stretched_decay(X, np.array([3.0, 1.2, 0.4]), 1.0))


class StretchedDecay(eqx.Module):
    """The hyperparameter `h` lives inside the model, as an array field."""

    h: jax.Array

    def __call__(self, t, p):
        return stretched_decay(t, p, self.h)


def _pytree_model(xs, p):
    """Named parameters; the hyperparameter arrives through the data's `x` pytree."""
    return p["amp"] * jnp.exp(-p["rate"] * xs["t"] ** xs["h"]) + p["offset"]


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a static jit argument
class GradCase:
    """`make(y, x, h) -> (model, data, solver)`; derivatives are taken in y, x and h."""

    name: str
    make: Callable
    y: np.ndarray
    h: float
    p0: object
    reverse: bool = True  # also check jax.jacrev against jax.jacfwd
    active: tuple | None = None  # the known active set, if not the solution's mask


def _module_case(name, y, solver_kwargs, sigma=None, h=1.0):
    def make(y, x, h):
        data = nf.Data(x, y, sigma=sigma)
        return StretchedDecay(h), data, nf.Solver(**solver_kwargs, **TIGHT)

    return GradCase(name, make, y, h, jnp.array([1.0, 0.5, 0.0]), reverse=False)


def _loss_case(loss_cls, strategy):
    def make(y, x, h):
        solver = nf.Solver(strategy=strategy, loss=loss_cls(f_scale=h), **TIGHT)
        return StretchedDecay(jnp.asarray(1.0)), nf.Data(x, y), solver

    name = f"{loss_cls.__name__.lower()}_{type(strategy).__name__}"
    reverse = loss_cls is nf.Cauchy
    return GradCase(
        name, make, Y_CLEAN + NOISE + OUTLIERS, 0.1, jnp.array([1.0, 0.5, 0.0]), reverse
    )


def _bound_case():
    # The amplitude wants ~3 but its upper bound h = 2.5 holds it: dx0/dy = 0, dx0/dh = 1.
    # xtol = 0: SciPy's active-mask rule then sees no active bound (TRF stays strictly
    # inside), yet the derivatives must still treat the amplitude as held.
    def make(y, x, h):
        upper = jnp.stack([h, 10.0, 1.0])
        tolerances = dict(TIGHT, xtol=0.0)
        solver = nf.Solver(bounds=(jnp.array([0.0, 0.0, -1.0]), upper), **tolerances)
        return StretchedDecay(jnp.asarray(1.0)), nf.Data(x, y), solver

    p0 = jnp.array([1.0, 0.5, 0.0])
    return GradCase("upper_bound_active", make, Y_CLEAN + NOISE, 2.5, p0, active=(1, 0, 0))


def _dogbox_bound_case():
    # Dogbox puts the amplitude exactly on its bound h and holds it there (its active
    # set), under a robust loss: dx0/dh = 1, the free parameters follow the data.
    def make(y, x, h):
        upper = jnp.stack([h, 10.0, 1.0])
        solver = nf.Solver(
            strategy=nf.Dogbox(),
            loss=nf.SoftL1(f_scale=0.2),
            bounds=(jnp.array([0.0, 0.0, -1.0]), upper),
            **TIGHT,
        )
        return StretchedDecay(jnp.asarray(1.0)), nf.Data(x, y), solver

    p0 = jnp.array([1.0, 0.5, 0.0])
    return GradCase(
        "dogbox_upper_bound_soft_l1",
        make,
        Y_CLEAN + NOISE + OUTLIERS,
        2.5,
        p0,
        reverse=False,
    )


def _closure_case():
    # LM, hyperparameter closed over by a plain function.
    def make(y, x, h):
        model = lambda t, p: stretched_decay(t, p, h)  # noqa: E731
        return model, nf.Data(x, y), nf.Solver(strategy=nf.LevenbergMarquardt(), **TIGHT)

    return GradCase("closure_lm", make, Y_CLEAN + NOISE, 1.1, jnp.array([1.0, 0.5, 0.0]))


def _pytree_case():
    mask = np.arange(M) % 9 != 4  # masked points: zero derivative

    def make(y, x, h):
        return _pytree_model, nf.Data({"t": x, "h": h}, y, mask=mask), nf.Solver(**TIGHT)

    p0 = {"amp": jnp.asarray(1.0), "rate": jnp.asarray(0.5), "offset": jnp.zeros(1)}
    return GradCase("pytree_params_hyper_in_data", make, Y_CLEAN + NOISE, 0.9, p0)


GRAD_CASES = [
    _module_case("trf_sigma_hyper_in_module", Y_CLEAN + NOISE, {}, sigma=SIGMA, h=1.05),
    _closure_case(),
    _bound_case(),
    _dogbox_bound_case(),
    _loss_case(nf.SoftL1, nf.TRF()),
    _loss_case(nf.Huber, nf.TRF()),
    _loss_case(nf.Cauchy, nf.LevenbergMarquardt()),
    _loss_case(nf.Arctan, nf.TRF()),
    _pytree_case(),
]


def _fit(case, theta):
    model, data, solver = case.make(*theta)
    solution = nf.solve(model, data, nf.init(model, data, case.p0, solver))
    return solution


def _fitted_flat(case, theta):
    return ravel_pytree(_fit(case, theta).x)[0]


def _polished(case, theta, start, active, steps=5):
    """The exact optimum near `start`: Newton steps on the free parameters' robust cost
    (no solver involved), with parameters at a bound pinned exactly to it."""
    model, data, solver = case.make(*theta)
    state = nf.init(model, data, case.p0, solver)
    _, unravel = ravel_pytree(state.params)
    x = jnp.where(active < 0, state.lower, jnp.where(active > 0, state.upper, start))
    free = active == 0

    def cost(x):
        return state.loss.cost(data.weighted_residual(model(data.x, unravel(x))))

    def newton_step(_, x):
        g = jnp.where(free, jax.grad(cost)(x), 0.0)
        hessian = jnp.where(free[:, None] & free[None, :], jax.hessian(cost)(x), jnp.eye(x.size))
        return x - jnp.linalg.solve(hessian, g)

    x = jax.lax.fori_loop(0, steps, newton_step, x)
    return x, jnp.max(jnp.abs(jnp.where(free, jax.grad(cost)(x), 0.0)))


def _perturbations(theta):
    """Central-difference points for every entry of `theta`, stacked in one batch."""
    flat, unflatten = ravel_pytree(theta)
    steps = 1e-4 * jnp.maximum(1.0, jnp.abs(flat))
    deltas = jnp.eye(flat.size) * steps[:, None]
    return jnp.concatenate([flat + deltas, flat - deltas]), steps, unflatten


@eqx.filter_jit
def _derivatives_and_reference(case, theta):
    """One compiled call per case: the fit, its forward- and reverse-mode Jacobians in
    (y, x, h), and the exact optima at all perturbed inputs (Newton from the fit)."""

    def fitted_flat(theta):  # the solution rides along, so the fit is compiled once
        solution = _fit(case, theta)
        return ravel_pytree(solution.x)[0], solution

    forward, solution = jax.jacfwd(fitted_flat, has_aux=True)(theta)
    # Reverse mode (the transposed rule) on a subset, to keep compile time down.
    reverse = jax.jacrev(lambda th: _fitted_flat(case, th))(theta) if case.reverse else None
    batch, steps, unflatten = _perturbations(theta)
    start = ravel_pytree(solution.x)[0]
    active = solution.active_mask if case.active is None else jnp.asarray(case.active)
    optima, residual_grads = jax.vmap(lambda v: _polished(case, unflatten(v), start, active))(batch)
    return solution, forward, reverse, optima, residual_grads, steps


def _central_differences(theta, optima, steps):
    plus, minus = np.split(np.asarray(optima), 2)
    columns = (plus - minus) / (2 * np.asarray(steps)[:, None])  # (len(theta), n)
    sizes = [np.size(t) for t in theta]
    return [block.T for block in np.split(columns, np.cumsum(sizes)[:-1])]


# The default run: an active bound and a robust loss; the rest in CI's extended step.
DEFAULT_GRAD_CASES = ("upper_bound_active", "softl1_TRF")


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            id=case.name,
            marks=[] if case.name in DEFAULT_GRAD_CASES else [pytest.mark.extended],
        )
        for case in GRAD_CASES
    ],
)
def test_jacobians_match_central_differences(case):
    theta = (jnp.asarray(case.y), jnp.asarray(X), jnp.asarray(case.h))
    solution, forward, reverse, optima, residual_grads, steps = _derivatives_and_reference(
        case, theta
    )
    assert bool(solution.success), solution.message
    assert float(jnp.max(residual_grads)) < 1e-9, "Newton polishing did not converge"
    reference = _central_differences(theta, optima, steps)
    for index, (name, ref) in enumerate(zip("yxh", reference, strict=True)):
        fwd = np.asarray(forward[index]).reshape(ref.shape)
        scale = np.max(np.abs(ref))
        assert scale > 0
        np.testing.assert_allclose(fwd, ref, rtol=1e-5, atol=1e-5 * scale, err_msg=name)
        if reverse is not None:
            rev = np.asarray(reverse[index]).reshape(ref.shape)
            # Two compiled programs (each solves the fit itself): they agree to what the
            # fit resolves, far inside the 1e-5 agreement with central differences.
            np.testing.assert_allclose(rev, fwd, rtol=1e-7, atol=1e-9 * scale, err_msg=name)
    if case.name == "dogbox_upper_bound_soft_l1":
        assert float(solution.x[0]) == 2.5  # on the bound exactly, as SciPy's dogbox
        assert np.asarray(solution.active_mask).tolist() == [1, 0, 0]
    if case.name == "upper_bound_active":
        assert float(solution.x[0]) == pytest.approx(2.5, abs=1e-12)
        d_dy = np.asarray(forward[0]).reshape(reference[0].shape)
        d_dh = np.asarray(forward[2]).reshape(reference[2].shape)
        np.testing.assert_allclose(d_dy[0], 0.0, atol=1e-14)  # pinned: deaf to the data
        assert d_dh[0] == pytest.approx(1.0)  # but it follows its bound


def test_linear_model_jacobian_is_the_weighted_least_squares_operator():
    t = np.linspace(-1, 2, 25)
    design = np.stack([np.ones_like(t), t, np.sin(3 * t), t**2], axis=1)
    sigma = 0.5 + np.random.default_rng(1).random(t.size)
    y = design @ np.array([0.3, -1.0, 0.5, 0.2]) + 0.1 * np.random.default_rng(2).standard_normal(
        t.size
    )

    def model(design, p):
        return design @ p

    def fitted(y):
        data = nf.Data(design, y, sigma=sigma)
        return nf.solve(model, data, nf.init(model, data, jnp.zeros(4), nf.Solver(**TIGHT))).x

    weights = np.diag(sigma**-2)
    closed_form = np.linalg.solve(design.T @ weights @ design, design.T @ weights)

    def initial_cost(y):
        data = nf.Data(design, y, sigma=sigma)
        return nf.solve(model, data, nf.init(model, data, jnp.zeros(4))).initial_cost

    forward, reverse, initial_cost_grad = jax.jit(
        lambda y: (jax.jacobian(fitted)(y), jax.jacrev(fitted)(y), jax.grad(initial_cost)(y))
    )(jnp.asarray(y))
    np.testing.assert_allclose(forward, closed_form, atol=1e-10)
    np.testing.assert_allclose(reverse, closed_form, atol=1e-10)
    # The cost at p0 = 0 is ½ Σ (y / σ)², whose gradient is y / σ².
    np.testing.assert_allclose(initial_cost_grad, y / sigma**2, rtol=1e-12)


# --- one small problem shared by the remaining tests (compiled once per transform) ---

SIMPLE_P0 = jnp.array([2.5, 1.0, 0.3])  # close enough to converge within 20 evaluations
SIMPLE_Y = jnp.asarray(Y_CLEAN + NOISE)


def _simple_fit(y, max_nfev):
    model = StretchedDecay(jnp.asarray(1.0))
    data = nf.Data(X, y)
    state = nf.init(model, data, SIMPLE_P0, nf.Solver(max_nfev=max_nfev, **TIGHT))
    return nf.solve(model, data, state)


def _prediction_loss(y, max_nfev=1000):
    """A scalar computed from the solution (squared norm of the fitted curve plus the
    cost), with the fit's evaluation count and success as auxiliary outputs."""
    solution = _simple_fit(y, max_nfev)
    value = jnp.sum(stretched_decay(X, solution.x, 1.0) ** 2) + solution.cost
    return value, (solution.nfev, solution.success)


# Compiled once per `max_nfev` and shared by the tests below.
GRAD = jax.jit(jax.grad(_prediction_loss, has_aux=True), static_argnums=1)


@pytest.mark.extended
def test_grad_jvp_and_finite_difference_agree():
    direction = jnp.asarray(np.random.default_rng(3).standard_normal(M))
    h = 1e-5

    @jax.jit
    def derivatives(y, v):
        loss = lambda y: _prediction_loss(y)[0]  # noqa: E731
        _, tangent = jax.jvp(loss, (y,), (v,))
        fd = (loss(y + h * v) - loss(y - h * v)) / (2 * h)
        return tangent, fd

    grad, _ = GRAD(SIMPLE_Y, 1000)
    tangent, fd = derivatives(SIMPLE_Y, direction)
    assert float(tangent) == pytest.approx(float(grad @ direction), rel=1e-10)
    # The scalar is smooth and well conditioned: central differences are accurate.
    assert float(tangent) == pytest.approx(float(fd), rel=1e-5)


def _equations(jaxpr):
    """All equations, nested ones included."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                if hasattr(sub, "eqns"):  # a Jaxpr
                    yield from _equations(sub)
                elif hasattr(sub, "jaxpr") and hasattr(sub, "consts"):  # a ClosedJaxpr
                    yield from _equations(sub.jaxpr)


def _loops(jaxpr):
    return sum(eqn.primitive.name in ("while", "scan") for eqn in _equations(jaxpr))


def test_backward_pass_does_not_depend_on_iteration_count():
    # The fit takes 7 evaluations; its last accepted step reduces the cost by only ~40 eps
    # of it, so rounding elsewhere may reject a step or two: the small budget leaves room.
    compiled = {cap: GRAD.lower(SIMPLE_Y, cap).compile() for cap in (20, 1000)}
    results = {cap: compiled[cap](SIMPLE_Y) for cap in (20, 1000)}
    for _, (nfev, success) in results.values():
        assert bool(success)
        assert int(nfev) < 20  # converged within the small budget, not cut off
    # Two compiled programs differing in a static budget: equal to what the fit resolves.
    np.testing.assert_allclose(results[20][0], results[1000][0], rtol=1e-7)

    # Differentiating adds no loop: the gradient's program holds exactly the loops of
    # the forward fit (its while-loop is run once, forward; only the linear solve at the
    # optimum is transposed), and its size is the same whatever the iteration budget.
    forward_loops = _loops(jax.make_jaxpr(_prediction_loss, static_argnums=1)(SIMPLE_Y, 20).jaxpr)
    sizes = {}
    for cap in (20, 1000):
        jaxpr = jax.make_jaxpr(GRAD, static_argnums=1)(SIMPLE_Y, cap).jaxpr
        assert _loops(jaxpr) == forward_loops >= 1
        sizes[cap] = sum(1 for _ in _equations(jaxpr))
    assert sizes[20] == sizes[1000]
    memory = {cap: compiled[cap].memory_analysis() for cap in (20, 1000)}
    if memory[20] is not None:
        assert memory[20].temp_size_in_bytes == memory[1000].temp_size_in_bytes


@pytest.mark.extended
def test_vmap_of_grad_matches_separate_calls():
    rng = np.random.default_rng(4)
    ys = jnp.asarray(Y_CLEAN + 0.05 * rng.standard_normal((4, M)))
    batched, _ = jax.jit(jax.vmap(jax.grad(_prediction_loss, has_aux=True)))(ys)
    separate = np.stack([GRAD(y, 1000)[0] for y in ys])
    # Batched and single fits round differently: the optima (and so these derivatives)
    # agree to what the fit resolves, not bit for bit.
    np.testing.assert_allclose(batched, separate, rtol=1e-6, atol=1e-9 * np.max(np.abs(separate)))
