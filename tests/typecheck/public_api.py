"""Type-checked, never run: the public API as the README and the docs use it.
`mypy` (`.ci/typecheck`) checks this file beside the package, so a signature that
rejects documented usage fails CI. (Not a test module: pytest does not collect it.)"""

import jax
import jax.numpy as jnp
import numpy as np

import nlsq_fn as nf


def decay(x, amplitude, rate, offset):
    return amplitude * jnp.exp(-rate * x) + offset


def model(x, p):
    return p["a"] * jnp.exp(-p["b"] * x) + p["c"]


x = np.linspace(0, 4, 60)
y = 2.5 * np.exp(-1.3 * x) + 0.5
ys = np.stack([y, 2 * y])
p0 = {"a": 1.0, "b": 0.5, "c": 0.0}

# Front ends.
popt, pcov = nf.curve_fit(decay, x, y, p0=[1.0, 0.5, 0.0])
result = nf.CurveFit(decay, x, y, p0=[1.0, 0.5, 0.0]).fit()
report: str = result.summary()
cost: float = result.cost
status: int = result.status
ok: bool = result.success
errors = result.perr
scipy_result = nf.least_squares(lambda p: p[0] * x - y, np.array([1.0]))

# The functional core.
data = nf.Data(x, y)
solver = nf.Solver(strategy=nf.TRF(), loss=nf.Huber(f_scale=0.5), ftol=1e-8)
lm = nf.Solver(strategy=nf.LevenbergMarquardt(), loss=nf.Linear())
state = nf.init(model, data, p0, solver)
solution = nf.solve(model, data, state)
fitted_b = solution.x["b"]
converged = solution.success
jitted = jax.jit(nf.solve, static_argnums=0)(model, data, state)

# Batches.
batch_popt, batch_pcov, fits = nf.curve_fit_batch(decay, x, ys, np.array([1.0, 0.5, 0.0]))
ragged_popt, _, ragged_fits = nf.curve_fit_batch(
    decay, [x, x[:30]], [y, y[:30]], np.array([1.0, 0.5, 0.0]), pad=True, progress=False
)
padded = nf.pad_datasets([(x, y), (x[:30], y[:30])])
batch_state = nf.init_batch(model, padded, p0, solver)
batch_fits = nf.solve_batch(model, padded, batch_state)
best = nf.multistart(model, data, p0, solver, n_starts=8).best

# A gradient through the fit.
grad_b = jax.grad(lambda y: nf.solve(model, nf.Data(x, y), state).x["b"])(jnp.asarray(y))

# Structured parameters: fixed and tied, global fits, errors in x.
held_popt, held_pcov = nf.curve_fit(decay, x, y, p0=[1.0, 0.5, 0.0], fixed={"rate": 1.3})
held = nf.CurveFit(decay, x, y, p0=[1.0, 0.5, 0.0], fixed={"rate": 1.3}).fit()
tied = nf.CurveFit(
    decay, x, y, p0=[1.0, 0.5, 0.0], ties={"offset": lambda p: 0.2 * p["amplitude"]}
).fit()
held_names: tuple = held.fixed + tied.tied
spectra = nf.global_fit(
    decay,
    [(x, y), (x[:30], 2 * y[:30])],
    [1.0, 0.5, 0.0],
    shared=("rate",),
    bounds={"rate": (0.0, 5.0)},
)
shared_rate = spectra.params["rate"]
shared_cov: np.ndarray = spectra.shared_pcov
corrected = nf.odr(decay, x, y, [1.0, 0.5, 0.0], sigma_x=0.05, sigma_y=0.02)
beta: np.ndarray = corrected.beta
delta: np.ndarray = corrected.delta
