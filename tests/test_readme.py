"""The README's code runs as written, and states what it shows (in a fresh Python: it
turns on float64, a process-wide JAX setting)."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


@pytest.mark.extended
def test_readme_code_runs(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README.md has no python block"
    checks = """
import numpy as np
assert result.success and np.allclose(popt, result.popt)
assert repr(result).startswith("CurveFitResult(amplitude=2.5±0.025, rate=1.355±0.028")
assert popts.shape == (1000, 3) and np.all(np.asarray(fits.success))
assert np.allclose(np.median(np.asarray(popts), axis=0), [2.5, 1.3, 0.5], atol=0.05)
assert d_rate_d_y.shape == x.shape and np.all(np.isfinite(np.asarray(d_rate_d_y)))
print("ok")
"""
    script = tmp_path / "readme.py"
    script.write_text("\n\n".join(blocks) + checks)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=900,
    )
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
