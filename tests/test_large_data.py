"""NLSQ's large-data names (issue 21): `estimate_memory_requirements`,
`LargeDatasetFitter`, `LDMemoryConfig` and `curve_fit_large`, against closed forms and
SciPy's fit of the same data."""

import math

import numpy as np
import pytest
from helpers import decay

import nlsq_fn as nf


def test_memory_requirements_and_chunking():
    stats = nf.estimate_memory_requirements(20_000_000, 4)
    per_point = 8 * (2 + 4 * 4)  # x, y; Jacobian row and 3 intermediates (float64)
    assert stats.n_points == 20_000_000 and stats.n_params == 4
    np.testing.assert_allclose(stats.total_memory_estimate_gb, 20e6 * per_point / 1e9)
    assert stats.recommended_chunk_size == 1_000_000 and stats.n_chunks == 20
    assert nf.estimate_memory_requirements(100_000, 3).n_chunks == 1
    fitter = nf.LargeDatasetFitter(memory_limit_gb=2.0)
    assert fitter.get_memory_recommendations(100_000, 3)["processing_strategy"] == "single_chunk"


@pytest.mark.extended
def test_large_dataset_fitter_chunked_fit_is_the_exact_fit(guide_data, guide_scipy_fit):
    config = nf.LDMemoryConfig(memory_limit_gb=1e-6, min_chunk_size=16, max_chunk_size=16)
    result = nf.LargeDatasetFitter(config=config).fit(decay, *guide_data, p0=[1, 1, 0])
    assert result.n_chunks == math.ceil(40 / 16)
    np.testing.assert_allclose(result.popt, guide_scipy_fit[0], rtol=1e-6)
    popt, pcov = nf.curve_fit_large(decay, *guide_data, p0=[1, 1, 0])  # one chunk: curve_fit
    np.testing.assert_allclose(pcov, guide_scipy_fit[1], rtol=1e-4)
    with pytest.raises(ValueError, match="has 2 points"):
        nf.curve_fit_large(decay, [1.0, 2.0, 3.0], [1.0, 2.0], p0=[1, 1, 0])
    with pytest.raises(ValueError, match="sigma length"):
        nf.curve_fit_large(decay, *guide_data, p0=[1, 1, 0], sigma=np.ones(41))
