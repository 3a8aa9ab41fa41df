"""Test-wide settings.

* Without a GPU, TRITON_INTERPRET=1 is set before anything imports a Triton kernel (it is read
  when @triton.jit decorates), so the Triton backends run on CPU tensors.  With a GPU it is left
  unset, so the Triton kernels are tested compiled on CUDA tensors (their CPU-tensor cases skip);
  set TRITON_INTERPRET=1 by hand to run the interpreter there instead.
* Outputs are poisoned: with deterministic algorithms on and fill_uninitialized_memory, every
  torch.empty (at::empty in the C++ kernels too) is filled with NaN, so an element a kernel
  forgets to write fails the comparison instead of passing by luck.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

torch.use_deterministic_algorithms(True, warn_only=True)
torch.utils.deterministic.fill_uninitialized_memory = True


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def float64_default():
    """torch's default dtype float64 for the test (restored after)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def captum_weights(monkeypatch):
    """kexue's quadrature rules with the weights rounded to float32, as Captum applies them
    (``torch.tensor(step_sizes).float()``): with it kexue and Captum must agree to float64 rounding
    (the attribution tests)."""
    import kexue.attribution.api as api
    from kexue.attribution.quadrature import rule

    def rounded(method, n):
        a, w = rule(method, n)
        return a, w.float().double()

    monkeypatch.setattr(api, "rule", rounded)
