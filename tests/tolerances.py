"""How close two float32 computations of the same quantity must be, on any CPU.

Two paths that agree in exact arithmetic (a batch padded wider, a window trimmed, a loss written
out by hand, one item encoded alone or in a batch) round differently, and how differently depends
on the machine: the CPU kernels choose their blocking and vector width (AVX2, AVX-512) at run
time, so an AMD EPYC sums in another order than an Intel Xeon. Each float32 operation is exact
to about 6e-8 relative; over a model's depth the paths drift apart by up to about 1e-6 relative
(measured here: 2e-7 to 8e-7). A relative tolerance of 1e-4 sits two orders above that drift and
far below what a real defect changes (a wrong mask or position moves values by 1e-2 or more).
The absolute part is scaled by the larger magnitude of the expected values, so that entries near
zero in a tensor of large values (gradients) are judged on the tensor's scale, not their own.

Identical computations on one machine (save then load, the same call twice) stay bit-exact and
are compared with ``torch.equal``.
"""

import numpy as np
import torch

RTOL = 1e-4
ATOL = 1e-5


def close(actual, expected, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """True when ``actual`` matches ``expected`` (tensors or arrays of one shape) to float32
    rounding: |a - e| <= atol * max(1, max|e|) + rtol * |e| elementwise."""
    if isinstance(expected, torch.Tensor):
        actual = torch.as_tensor(actual, dtype=expected.dtype, device=expected.device)
        scale = max(1.0, float(expected.detach().abs().max())) if expected.numel() else 1.0
        return actual.shape == expected.shape and torch.allclose(actual, expected, rtol=rtol, atol=atol * scale)
    expected = np.asarray(expected)
    actual = np.asarray(actual)
    scale = max(1.0, float(np.abs(expected).max())) if expected.size else 1.0
    return actual.shape == expected.shape and np.allclose(actual, expected, rtol=rtol, atol=atol * scale)


def assert_close(actual, expected, what: str = "values", rtol: float = RTOL, atol: float = ATOL) -> None:
    """``close`` as an assertion whose message gives the largest difference."""
    if close(actual, expected, rtol, atol):
        return
    a = np.asarray(actual.detach().cpu() if isinstance(actual, torch.Tensor) else actual, dtype=np.float64)
    e = np.asarray(expected.detach().cpu() if isinstance(expected, torch.Tensor) else expected, dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"{what}: shape {a.shape} != expected {e.shape}")
    raise AssertionError(f"{what}: largest difference {np.abs(a - e).max():.3g} (largest expected magnitude {np.abs(e).max():.3g})")
