"""Triton launches run on their tensors' GPU (the GPU-path audit).

Triton launches a kernel on the *current* CUDA device and its current stream, whatever device
the pointers belong to.  With tensors on cuda:1 while cuda:0 is current (a model spread over
GPUs with ``device_map="auto"``), every Triton backend of kexue (linear attention, cross-entropy,
probe, sampling: all launch through ``kexue.triton_kernels._compat.launch``) would run on the wrong
GPU, on a stream that does not wait for the kernels that produced its inputs.  The launch must
switch to the tensors' device for the launch and only then.  Checked without a GPU: the
launch is recorded (no kernel runs) with a tensor that only claims to be on cuda:1 and
``torch.cuda``'s device calls stubbed; the same path on GPUs is the real switch.
"""

from __future__ import annotations

import contextlib

import pytest
import torch

compat = pytest.importorskip("kexue.triton_kernels._compat")


class _ClaimsDevice(torch.Tensor):
    """A tensor that reports `device` without storage there (no kernel ever touches it)."""

    @staticmethod
    def __new__(cls, device):
        return torch.Tensor._make_wrapper_subclass(cls, (2,), dtype=torch.float32, device=device)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        raise NotImplementedError(f"{func} on a device stand-in")


@pytest.fixture
def fake_gpus(monkeypatch):
    """torch.cuda stubs for two GPUs: the current device, a device context that switches it, and a
    launchable kernel that records (current device, grid, args) instead of running."""
    state = {"current": 0, "launches": []}

    @contextlib.contextmanager
    def device(d):
        previous = state["current"]
        state["current"] = torch.device(d).index
        try:
            yield
        finally:
            state["current"] = previous

    class Recorder:
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                state["launches"].append((state["current"], grid, args, kwargs))
            return run

    monkeypatch.setattr(torch.cuda, "current_device", lambda: state["current"])
    monkeypatch.setattr(torch.cuda, "device", device)
    monkeypatch.setattr(compat, "launchable", lambda kernel: Recorder())
    return state


def test_launch_switches_to_the_tensors_device(fake_gpus):
    x = _ClaimsDevice(torch.device("cuda", 1))
    compat.launch("kernel", (3,), 7, x, BLOCK=16)
    assert fake_gpus["launches"] == [(1, (3,), (7, x), {"BLOCK": 16})], "a cuda:1 tensor launched on cuda:0"
    assert fake_gpus["current"] == 0, "the current device was not restored after the launch"


@pytest.mark.parametrize("where", ["cuda:0", "cpu", "none"])
def test_launch_stays_on_the_current_device_otherwise(fake_gpus, where):
    args = () if where == "none" else (_ClaimsDevice(torch.device(where)) if where != "cpu" else torch.ones(2),)
    compat.launch("kernel", (1,), *args)
    assert [launch[0] for launch in fake_gpus["launches"]] == [0]


def test_first_cuda_tensor_decides(fake_gpus):
    a, b = torch.ones(2), _ClaimsDevice(torch.device("cuda", 1))
    compat.launch("kernel", (1,), a, 5, b)
    assert fake_gpus["launches"][0][0] == 1
