"""The matrix-free trust region (`TRFLSMR`, ``tr_solver="lsmr"``), structured Jacobians
and `jac_sparsity`, against SciPy's ``lsmr`` / ``least_squares`` and the dense path."""

import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp
from helpers import exp_decay
from jax.experimental.sparse import BCOO
from scipy.sparse.linalg import LinearOperator, aslinearoperator, lsmr

import nlsq_fn as nf
from nlsq_fn import least_squares
from nlsq_fn._evaluation.sparse_jacobian import group_columns
from nlsq_fn._strategies.lsmr_trf import TRFLSMR, solve_trust_region_2d

# NumPy models (SciPy's test functions) run on the host, as they should here.
pytestmark = pytest.mark.filterwarnings("ignore::nlsq_fn._problem.host_model.HostModelWarning")


def broyden(x):
    """SciPy's Broyden tridiagonal test function (test_least_squares.py), in JAX."""
    f = (3 - x) * x + 1
    f = f.at[1:].add(-x[:-1])
    return f.at[:-1].add(-2 * x[1:])


def broyden_np(x):
    f = (3 - x) * x + 1
    f[1:] -= x[:-1]
    f[:-1] -= 2 * x[1:]
    return f


def broyden_jac_sparse(x):
    n = x.size
    return sp.diags_array(
        [np.full(n - 1, -1.0), 3 - 2 * x, np.full(n - 1, -2.0)], offsets=[-1, 0, 1]
    ).tocsr()


def broyden_pattern(n):
    return sp.diags_array([np.ones(n - 1), np.ones(n), np.ones(n - 1)], offsets=[-1, 0, 1])


def broyden_start(n, seed=0):
    rng = np.random.default_rng(seed)
    x0 = -np.ones(n) + 0.1 * rng.standard_normal(n)
    lb = np.linspace(-2, -1.5, n) + 0.1 * rng.standard_normal(n)
    ub = np.linspace(-0.8, 0.0, n) + 0.1 * rng.standard_normal(n)
    return np.clip(x0, lb + 1e-3, ub - 1e-3), lb, ub


def test_lineax_lsmr_matches_scipy():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((30, 10)), rng.standard_normal(30)
    ours = lx.linear_solve(
        lx.MatrixLinearOperator(jnp.asarray(a)),
        jnp.asarray(b),
        lx.LSMR(rtol=1e-10, atol=0.0),
        throw=False,
    ).value
    theirs = lsmr(a, b, atol=1e-10, btol=1e-10)[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(ours, np.linalg.lstsq(a, b, rcond=None)[0], atol=1e-7)


def test_trust_region_2d_matches_scipy():
    from scipy.optimize._lsq.common import solve_trust_region_2d as scipy_2d

    rng = np.random.default_rng(2)
    for _ in range(20):
        m = rng.standard_normal((2, 2))
        b = m @ m.T + rng.choice([-1.0, 0.0, 0.5]) * np.eye(2)
        g, radius = rng.standard_normal(2), rng.uniform(0.1, 2)
        ours = np.asarray(solve_trust_region_2d(jnp.asarray(b), jnp.asarray(g), radius))
        theirs = scipy_2d(b, g, radius)[0]

        def q(p, b=b, g=g):
            return 0.5 * p @ b @ p + g @ p

        assert np.linalg.norm(ours) <= radius * (1 + 1e-10)
        assert q(ours) <= q(theirs) + 1e-10 * (1 + abs(q(theirs)))


def _exp_case():
    x = np.linspace(0, 4, 60)
    rng = np.random.default_rng(3)
    y = 2.5 * np.exp(-1.3 * x) + 0.5 + 0.02 * rng.standard_normal(x.size)
    y[::11] += 1.0  # outliers for the robust losses
    return exp_decay, nf.Data(x=jnp.asarray(x), y=jnp.asarray(y))


BOX = ([0.0, 0.0, 0.0], [10.0, 1.2, 1.0])
SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("loss", "bounds"),
    [
        ("soft_l1", BOX),
        pytest.param("linear", None, marks=SLOW),
        pytest.param("linear", BOX, marks=SLOW),
        pytest.param("soft_l1", None, marks=SLOW),
        pytest.param("cauchy", None, marks=SLOW),
        pytest.param("cauchy", BOX, marks=SLOW),
    ],
)
def test_equals_dense_path(loss, bounds):
    model, data = _exp_case()
    p0 = jnp.array([1.0, 0.5, 0.0])
    fits = []
    for strategy in (nf.TRF(), TRFLSMR()):
        solver = nf.Solver(
            strategy=strategy,
            bounds=bounds,
            loss=loss,
            ftol=1e-12,
            xtol=1e-12,
            gtol=1e-12,
        )
        fits.append(nf.solve(model, data, nf.init(model, data, p0, solver)))
    dense, iterative = fits
    assert int(iterative.status) > 0
    np.testing.assert_allclose(iterative.x, dense.x, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(iterative.cost, dense.cost, rtol=1e-9)
    assert iterative.factor is None and iterative.jac is None  # matrix-free


@pytest.mark.parametrize(
    ("bounded", "loss"),
    [
        (True, "linear"),
        pytest.param(False, "linear", marks=SLOW),
        pytest.param(False, "huber", marks=SLOW),
        pytest.param(True, "huber", marks=SLOW),
    ],
)
def test_matches_scipy_lsmr(bounded, loss):
    n = 60
    x0, lb, ub = broyden_start(n)
    bounds = (lb, ub) if bounded else (-np.inf, np.inf)
    ours = least_squares(broyden, x0, tr_solver="lsmr", bounds=bounds, loss=loss)
    theirs = scipy.optimize.least_squares(
        broyden_np,
        x0,
        jac=broyden_jac_sparse,
        bounds=bounds,
        loss=loss,
        tr_solver="lsmr",
    )
    assert isinstance(ours.jac, LinearOperator)  # JVPs and VJPs only, never the matrix
    v = np.linspace(0, 1, n)
    dense = jax.jacfwd(broyden)(jnp.asarray(ours.x))
    if loss == "linear":
        np.testing.assert_allclose(ours.jac.matvec(v), dense @ v, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(ours.jac.rmatvec(v), dense.T @ v, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ours.cost, theirs.cost, rtol=1e-3, atol=1e-12)
    np.testing.assert_allclose(ours.x, theirs.x, rtol=1e-6, atol=1e-8)
    assert ours.optimality < 1e-6


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"regularize": False}, marks=SLOW),
        pytest.param({"atol": 1e-10, "btol": 1e-10, "maxiter": 40}, marks=SLOW),
    ],
)
def test_tr_options(options):
    x0, _, _ = broyden_start(40)
    ours = least_squares(broyden, x0, tr_solver="lsmr", tr_options=options)
    assert ours.cost < 1e-18


def test_host_sparse_and_operator_jacobians():
    n = 50
    x0, lb, ub = broyden_start(n)
    theirs = scipy.optimize.least_squares(broyden_np, x0, jac=broyden_jac_sparse)
    sparse = least_squares(broyden_np, x0, jac=broyden_jac_sparse)  # lsmr chosen
    assert sp.issparse(sparse.jac)
    np.testing.assert_allclose(sparse.x, theirs.x, rtol=1e-7)
    operator = least_squares(broyden_np, x0, jac=lambda x: aslinearoperator(broyden_jac_sparse(x)))
    assert isinstance(operator.jac, LinearOperator)
    np.testing.assert_allclose(operator.x, theirs.x, rtol=1e-7)


@pytest.mark.parametrize(
    "method", ["3-point", pytest.param("2-point", marks=SLOW), pytest.param("cs", marks=SLOW)]
)
def test_jac_sparsity_grouped_differences(method):
    n = 40
    x0, lb, ub = broyden_start(n)
    kwargs = dict(jac=method, jac_sparsity=broyden_pattern(n), bounds=(lb, np.inf))
    ours = least_squares(broyden_np, x0, **kwargs)
    theirs = scipy.optimize.least_squares(broyden_np, x0, **kwargs)
    assert sp.issparse(ours.jac)
    np.testing.assert_allclose(ours.x, theirs.x, rtol=1e-7, atol=1e-10)
    assert ours.optimality < 1e-8


def test_group_columns():
    groups = group_columns(broyden_pattern(10))
    np.testing.assert_array_equal(groups, np.arange(10) % 3)


def test_refusals():
    x0, _, _ = broyden_start(10)
    pattern = broyden_pattern(10)
    with pytest.raises(ValueError, match="jac_sparsity"):
        least_squares(broyden_np, x0, jac_sparsity=pattern, method="lm")
    with pytest.raises(ValueError, match="jac_sparsity"):
        least_squares(broyden_np, x0, jac_sparsity=pattern, tr_solver="exact")
    with pytest.raises(ValueError, match="shape"):
        least_squares(broyden_np, x0, jac="2-point", jac_sparsity=pattern.tocsr()[:-1])
    with pytest.raises(ValueError, match="dense"):
        least_squares(broyden_np, x0, jac=broyden_jac_sparse, method="lm")
    with pytest.raises(ValueError, match="dense"):
        least_squares(broyden_np, x0, jac=broyden_jac_sparse, tr_solver="exact")
    with pytest.raises(ValueError, match="x_scale"):
        least_squares(
            broyden_np,
            x0,
            jac=lambda x: aslinearoperator(broyden_jac_sparse(x)),
            x_scale="jac",
        )
    with pytest.raises(TypeError):
        least_squares(broyden, x0, tr_solver="lsmr", tr_options={"tol": 1e-10})


@SLOW
def test_x_scale_jac_forms_the_jacobian():
    x0, _, _ = broyden_start(30)
    ours = least_squares(broyden, x0, tr_solver="lsmr", x_scale="jac")
    theirs = scipy.optimize.least_squares(
        broyden_np, x0, jac=broyden_jac_sparse, x_scale="jac", tr_solver="lsmr"
    )
    assert ours.cost < 1e-18
    np.testing.assert_allclose(ours.x, theirs.x, rtol=1e-7)


def test_jit_and_vmap():
    n = 20
    data = nf.Data(x=None, y=jnp.zeros(n))

    def model(_, p):
        return broyden(p)

    solver = nf.Solver(strategy=TRFLSMR())
    starts = jnp.stack([jnp.asarray(broyden_start(n, seed)[0]) for seed in range(3)])

    @jax.jit
    @jax.vmap
    def fit(p0):
        return nf.solve(model, data, nf.init(model, data, p0, solver))

    solutions = fit(starts)
    assert np.all(np.asarray(solutions.status) > 0)
    assert np.all(np.asarray(solutions.cost) < 1e-18)


@pytest.mark.parametrize("bounded", [True, pytest.param(False, marks=SLOW)])
def test_dogbox_lsmr_matches_scipy(bounded):
    n = 40
    x0, lb, ub = broyden_start(n)
    bounds = (lb, ub) if bounded else (-np.inf, np.inf)
    ours = least_squares(broyden, x0, tr_solver="lsmr", method="dogbox", bounds=bounds)
    theirs = scipy.optimize.least_squares(
        broyden_np,
        x0,
        jac=broyden_jac_sparse,
        bounds=bounds,
        method="dogbox",
        tr_solver="lsmr",
    )
    assert isinstance(ours.jac, LinearOperator)
    np.testing.assert_allclose(ours.x, theirs.x, rtol=1e-6, atol=1e-8)
    assert ours.optimality < 1e-6


@pytest.mark.parametrize(
    "bounds", [None, pytest.param(BOX, marks=pytest.mark.extended)]
)  # BOX holds p[1] at its upper bound
def test_implicit_gradient_equals_dense_path(bounds):
    # The matrix-free fit's implicit rule solves by GMRES with Hessian-vector products.
    model, data = _exp_case()
    p0 = jnp.array([1.0, 0.5, 0.0])

    def fitted(y, strategy):
        fit_data = nf.Data(x=data.x, y=y)
        solver = nf.Solver(strategy=strategy, bounds=bounds, ftol=1e-12, xtol=1e-12, gtol=1e-12)
        return nf.solve(model, fit_data, nf.init(model, fit_data, p0, solver)).x

    dense = jax.jacobian(lambda y: fitted(y, nf.TRF()))(data.y)
    iterative = jax.jacobian(lambda y: fitted(y, TRFLSMR()))(data.y)
    np.testing.assert_allclose(iterative, dense, rtol=1e-5, atol=1e-6)  # x agree to ~1e-8


def test_selected_variances_equal_the_dense_pcov():
    model, data = _exp_case()
    popt, pcov = nf.curve_fit(
        lambda x, a, b, c: model(x, jnp.stack([a, b, c])),
        np.asarray(data.x),
        np.asarray(data.y),
        p0=[1.0, 0.5, 0.0],
    )

    def residual(p):
        return model(data.x, p) - data.y

    variances = nf.selected_variances(residual, popt, [0, 2])
    np.testing.assert_allclose(variances, np.diag(pcov)[[0, 2]], rtol=1e-6)
    assert nf.covariance_memory(100_000) == 8 * 10**10
    x = jnp.full(100, -0.9)  # and on a larger system (CG takes many steps)
    jac = np.asarray(jax.jacfwd(broyden)(x))
    exact = np.diag(np.linalg.inv(jac.T @ jac))[[0, 50, 99]]
    np.testing.assert_allclose(
        nf.selected_variances(broyden, x, [0, 50, 99], absolute_sigma=True),
        exact,
        rtol=1e-6,
    )


def _banded(x):
    """A model whose Jacobian has an irregular pattern (mirrored and shifted couplings)
    and one more residual than parameters."""
    f = jnp.sin(x) * x[::-1] + jnp.roll(x, 2) ** 2
    return jnp.concatenate([f, jnp.atleast_1d(x[0] * x[3])])


def _pattern_of(fun, n):
    dense = np.asarray(jax.jacfwd(fun)(jnp.linspace(0.3, 1.1, n)))
    return dense != 0


def test_compressed_jvps_equal_the_dense_jacobian():
    n = 9
    x = jnp.linspace(-0.7, 1.3, n)
    pattern = _pattern_of(_banded, n)
    mode = nf.jac_sparsity(pattern)
    n_groups = int(mode.groups.max()) + 1
    assert n_groups < n  # fewer JVPs than parameters
    f, values = mode.residual_and_values(_banded, x, lambda v: v, None, None, None, False)
    dense = jax.jacfwd(_banded)(x)
    np.testing.assert_allclose(f, _banded(x), rtol=1e-15)
    np.testing.assert_allclose(mode.dense(values, n + 1, n), dense, rtol=1e-14, atol=1e-15)
    sparse = mode.sparse(values, n + 1, n)
    np.testing.assert_allclose(sparse.todense(), dense, rtol=1e-14, atol=1e-15)
    assert sparse.nse == pattern.sum()
    with pytest.raises(ValueError, match="pattern has shape"):
        nf.jac_sparsity(pattern[:, :-1]).residual_and_values(
            _banded, x, lambda v: v, None, None, None, False
        )


# Both rows in CI's extended step: by default the grouped JVPs of an autodiff model
# are checked through `least_squares` (TRFLSMR, bounds, SciPy's answer and the exact
# sparse Jacobian) by `test_least_squares_jac_sparsity_with_autodiff_matches_scipy`.
@pytest.mark.extended
@pytest.mark.parametrize("strategy", [nf.TRF(), TRFLSMR()])
def test_core_jac_sparsity_equals_autodiff(strategy):
    n = 30
    x0, lb, ub = broyden_start(n)
    data = nf.Data(x=None, y=jnp.zeros(n))

    def model(_, p):
        return broyden(p)

    fits = []
    for jac in ("fwd", nf.jac_sparsity(broyden_pattern(n))):
        solver = nf.Solver(strategy=strategy, jac=jac, bounds=(lb, ub))
        fits.append(nf.solve(model, data, nf.init(model, data, jnp.asarray(x0), solver)))
    plain, compressed = fits
    np.testing.assert_allclose(compressed.x, plain.x, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(compressed.cost, plain.cost, rtol=1e-8)
    if isinstance(strategy, TRFLSMR):
        dense = jax.jacfwd(broyden)(compressed.x)
        np.testing.assert_allclose(compressed.jac.todense(), dense, rtol=1e-14)  # BCOO


def test_least_squares_jac_sparsity_with_autodiff_matches_scipy():
    n = 40
    x0, lb, ub = broyden_start(n)
    ours = least_squares(broyden, x0, jac_sparsity=broyden_pattern(n), bounds=(lb, ub))
    theirs = scipy.optimize.least_squares(
        broyden_np, x0, jac=broyden_jac_sparse, bounds=(lb, ub), tr_solver="lsmr"
    )
    assert sp.issparse(ours.jac)  # SciPy's type, the exact values
    np.testing.assert_allclose(ours.jac.toarray(), broyden_jac_sparse(ours.x).toarray(), rtol=1e-14)
    np.testing.assert_allclose(ours.x, theirs.x, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(ours.cost, theirs.cost, rtol=1e-6)


def _broyden_bcoo(n):
    i = jnp.arange(n)
    indices = jnp.concatenate(
        [jnp.stack([i, i], 1), jnp.stack([i[1:], i[:-1]], 1), jnp.stack([i[:-1], i[1:]], 1)]
    )

    def jac(x):
        values = jnp.concatenate([3 - 2 * x, -jnp.ones(n - 1), -2 * jnp.ones(n - 1)])
        return BCOO((values, indices), shape=(n, n))

    return jac


def test_bcoo_jac_matches_scipy_sparse_jac():
    n = 40
    x0, lb, ub = broyden_start(n)
    ours = least_squares(broyden, x0, jac=_broyden_bcoo(n), bounds=(lb, ub))  # lsmr chosen
    theirs = scipy.optimize.least_squares(
        broyden_np, x0, jac=broyden_jac_sparse, bounds=(lb, ub), tr_solver="lsmr"
    )
    assert sp.issparse(ours.jac)
    np.testing.assert_allclose(ours.jac.toarray(), broyden_jac_sparse(ours.x).toarray())
    np.testing.assert_allclose(ours.x, theirs.x, rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError, match="dense"):
        least_squares(broyden, x0, jac=_broyden_bcoo(n), tr_solver="exact")


@pytest.mark.parametrize(
    "strategy", [pytest.param(nf.TRF(), marks=pytest.mark.extended), TRFLSMR()]
)
def test_bcoo_jac_with_sigma_equals_the_dense_jac(strategy):
    # The rows of a sparse Jacobian are divided by sigma as a dense one's.
    n = 30
    x0, _, _ = broyden_start(n)
    sigma = jnp.linspace(0.5, 2.0, n)
    data = nf.Data(x=None, y=jnp.full(n, 0.1), sigma=sigma)

    def model(_, p):
        return broyden(p)

    bcoo = _broyden_bcoo(n)
    fits = []
    for jac in (lambda _, p: bcoo(p).todense(), lambda _, p: bcoo(p)):
        solver = nf.Solver(strategy=strategy, jac=jac, ftol=1e-12, xtol=1e-12, gtol=1e-12)
        fits.append(nf.solve(model, data, nf.init(model, data, jnp.asarray(x0), solver)))
    dense, sparse = fits
    np.testing.assert_allclose(sparse.x, dense.x, rtol=1e-10)
    np.testing.assert_allclose(sparse.cost, dense.cost, rtol=1e-10, atol=1e-20)  # both ~0
