"""Test-wide settings.

* TRITON_INTERPRET=1 must be set before anything imports a Triton kernel (it is read when
  @triton.jit decorates), so the Triton backends run on CPU tensors here.
* Outputs are poisoned: with deterministic algorithms on and fill_uninitialized_memory, every
  torch.empty (at::empty in the C++ kernels too) is filled with NaN, so an element a kernel
  forgets to write fails the comparison instead of passing by luck.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.use_deterministic_algorithms(True, warn_only=True)
torch.utils.deterministic.fill_uninitialized_memory = True


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
