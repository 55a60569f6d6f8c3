"""Matrix products inside a fit run in full float32 on every device.

JAX leans towards speed by default: on recent NVIDIA GPUs a float32 matrix product
rounds its inputs to TensorFloat-32 (10 bits of mantissa, about 3 digits) and on TPUs to
bfloat16. A fit's normal equations, predicted reductions and covariances are matrix
products, so a float32 fit on such a device would lose about three of float32's seven
digits where the CPU keeps them: emulated on the CPU, TF32 products left `curve_fit`'s
standard errors of an exponential decay 2.4e-4 away from SciPy's float64 ones, against
1.7e-7 in full float32. A fit therefore traces its programs with
``jax.default_matmul_precision("highest")`` (full float32 on GPUs; float64 and the CPU are
unaffected), unless the user has chosen a precision (`jax_default_matmul_precision`, as a
setting or a context), which is then kept, for the model and the solver alike.
"""

import contextlib
import functools

import jax


def user_precision():
    """The matrix-product precision the user chose, or None (JAX's default)."""
    return jax.config.jax_default_matmul_precision


def full_precision_products():
    """A context for tracing: float32 matrix products in full float32 unless the user
    chose a precision (see the module's docstring)."""
    if user_precision() is not None:
        return contextlib.nullcontext()
    return jax.default_matmul_precision("highest")


def full_precision(function):
    """`function`, traced within `full_precision_products`."""

    @functools.wraps(function)
    def in_full_precision(*args, **kwargs):
        with full_precision_products():
            return function(*args, **kwargs)

    return in_full_precision
