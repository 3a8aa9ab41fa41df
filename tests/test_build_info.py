"""What a build records and checks (issue 21), tested on the CPU with monkeypatched values:
kexue.build_info() / `python -m kexue info`, the import-time torch check, the GPU architecture
check that makes `auto` fall back, and the build's toolkit discovery and loud failures."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import kexue
from kexue import _ext
from kexue.__main__ import main as cli_main
from kexue.linear_attention.api import BACKENDS as LA

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_config  # noqa: E402

# --- build_info and the CLI -------------------------------------------------------------------

def test_build_info_reports_build_runtime_and_backends():
    info = kexue.build_info()
    assert sorted(info) == ["backends", "build", "runtime", "version"]
    assert info["runtime"]["torch"] == torch.__version__
    assert info["runtime"]["cpu_isa"] in ("avx512", "avx2", "base")
    if info["build"] is not None:  # recorded by setup.py
        assert set(info["build"]) >= {"torch", "cuda", "cuda_archs", "nvcc", "cxx"}
        assert _ext.torch_mismatch(info["build"]["torch"], torch.__version__) is None
    cpu = info["backends"]["linear_attention"]["cpu"]
    assert cpu["cpu"] == {"available": True, "reason": ""}
    assert set(info["backends"]) == {"linear_attention", "cross_entropy", "probe.masked_batch"}


def test_info_cli_text_and_json(capsys):
    assert cli_main(["info"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("kexue ") and "running:" in text and "linear_attention on cpu" in text
    assert cli_main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["runtime"]["torch"] == torch.__version__


def test_info_text_names_the_build(monkeypatch):
    from kexue._info import format_info

    info = kexue.build_info()
    info["build"] = {"torch": "2.11.0+cu130", "cuda": "13.0", "cuda_archs": ["sm_90", "compute_90"],
                     "nvcc": "13.0.88", "cxx": "c++ 12.2.0", "python_abi": "abi3 (CPython >= 3.10)"}
    text = format_info(info)
    assert "torch 2.11.0+cu130, CUDA 13.0 (nvcc 13.0.88), GPU code sm_90, compute_90" in text


# --- import-time torch check ------------------------------------------------------------------

def test_torch_mismatch_message_names_both_versions_and_both_ways_out():
    assert _ext.torch_mismatch("2.11.0+cu130", "2.11.0") is None
    assert _ext.torch_mismatch("2.11.0", "2.11.0+cu130") is None
    msg = _ext.torch_mismatch("2.11.0+cu130", "2.13.0+cpu")
    assert "2.11.0+cu130" in msg and "2.13.0+cpu" in msg
    assert "pip install torch==2.11.0" in msg and "from source" in msg
    assert _ext.torch_mismatch("2.11.0", "2.11.1") is not None  # a release is a release


def test_import_fails_clearly_when_torch_differs_from_the_build():
    # a fake build record for another torch, installed before kexue imports it
    code = ("import sys, types; m = types.ModuleType('kexue._build_info'); "
            "m.BUILD = {'torch': '1.13.1+cu117', 'cuda': '11.7', 'cuda_archs': ['sm_80']}; "
            "sys.modules['kexue._build_info'] = m; import kexue")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: this kexue was built against torch 1.13.1+cu117")
    assert torch.__version__ in last and "pip install torch==1.13.1" in last


# --- GPU architecture check -------------------------------------------------------------------

@pytest.mark.parametrize(("arch", "cc", "runs"), [
    ("sm_90", (9, 0), True), ("sm_90", (8, 6), False), ("sm_90", (10, 0), False),
    ("sm_80", (8, 6), True), ("sm_80", (8, 9), True), ("sm_86", (8, 0), False), ("sm_80", (9, 0), False),
    ("compute_90", (9, 0), True), ("compute_90", (12, 0), True), ("compute_90", (8, 9), False),
    ("sm_90a", (9, 0), True), ("sm_100a", (10, 3), False), ("bogus", (9, 0), False),
])
def test_arch_runs(arch, cc, runs):
    assert _ext.arch_runs(arch, cc) is runs


def test_arch_problem_message():
    assert _ext.arch_problem(["sm_80", "sm_90"], (8, 6)) == ""
    assert _ext.arch_problem([], (7, 5)) == ""  # nothing recorded: nothing to say
    msg = _ext.arch_problem(["sm_90"], (8, 6), "NVIDIA A10")
    assert "sm_90" in msg and "NVIDIA A10" in msg and "8.6" in msg and 'TORCH_CUDA_ARCH_LIST="8.6"' in msg


@pytest.fixture
def fake_gpu(monkeypatch):
    """A CUDA kernel registered and a GPU of compute capability 8.6, with a build for sm_90 only."""
    monkeypatch.setattr(_ext, "has_kernel", lambda op, key: True)
    monkeypatch.setattr(_ext, "BUILD", {"torch": torch.__version__, "cuda": "13.0", "cuda_archs": ["sm_90"]})
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i=None: (8, 6))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=None: "NVIDIA A10")
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    _ext._cuda_arch_problem.cache_clear()
    yield
    _ext._cuda_arch_problem.cache_clear()


def test_gpu_without_code_marks_cuda_unavailable_and_auto_falls_back(fake_gpu):
    dev = torch.device("cuda", 0)
    ok, why = LA.availability("cuda", dev)
    assert not ok and "sm_90" in why and "8.6" in why
    name, note = LA.resolve("auto", dev)
    assert name != "cuda" and "cuda:" in note and "sm_90" in note  # explain() shows this note
    with pytest.raises(ValueError, match="backend='cuda' cannot run here.*compute capability 8.6"):
        LA.resolve("cuda", torch.device("cuda"))  # index None: the current device


def test_gpu_with_code_keeps_cuda(fake_gpu, monkeypatch):
    monkeypatch.setattr(_ext, "BUILD", {"torch": torch.__version__, "cuda": "13.0", "cuda_archs": ["sm_80"]})
    assert LA.availability("cuda", torch.device("cuda", 0)) == (True, "")
    assert LA.resolve("auto", torch.device("cuda", 0))[0] == "cuda"


# --- the build: toolkit discovery, runtime linking, loud failures --------------------------------

def test_find_cuda_home_finds_pips_toolkit(tmp_path, monkeypatch):
    home = tmp_path / "site" / "nvidia" / "cu13"
    (home / "bin").mkdir(parents=True)
    (home / "bin" / "nvcc").write_text("")
    for var in ("CUDA_HOME", "CUDA_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site")])
    monkeypatch.setattr(build_config.sysconfig, "get_paths", lambda: {"purelib": "", "platlib": ""})
    found, where = build_config.find_cuda_home("13")
    if Path("/usr/local/cuda/bin/nvcc").is_file() and found == "/usr/local/cuda":
        pytest.fail("pip's toolkit must come before /usr/local/cuda")
    assert found == str(home) and "pip" in where
    assert build_config.find_cuda_home("12")[0] != str(home)  # another CUDA major: not that one
    monkeypatch.setenv("CUDA_HOME", "/opt/cuda")
    assert build_config.find_cuda_home("13") == ("/opt/cuda", "$CUDA_HOME")


def test_cudart_link_without_the_unversioned_library(tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "libcudart.so.13").write_text("")
    assert build_config.cudart_link(str(tmp_path)) == ([], [f"-L{lib}", "-l:libcudart.so.13"])
    (lib / "libcudart.so").write_text("")
    assert build_config.cudart_link(str(tmp_path)) == (["cudart"], [])


def test_arch_targets_from_gencode_flags():
    flags = ["-gencode=arch=compute_80,code=sm_80", "-gencode=arch=compute_90,code=compute_90",
             "-gencode=arch=compute_90,code=sm_90"]
    assert build_config.arch_targets(flags) == ["sm_80", "sm_90", "compute_90"]


@pytest.mark.skipif(bool(torch.version.cuda), reason="needs a torch without CUDA")
@pytest.mark.skipif(not (ROOT / "pyext").is_dir(), reason="needs the source tree (not an installed wheel)")
@pytest.mark.parametrize("env", [{"TORCH_CUDA_ARCH_LIST": "9.0"}, {"KEXUE_CUDA": "1"}])
def test_build_asking_for_cuda_with_a_cpu_torch_fails_loudly(env):
    clean = {k: v for k, v in os.environ.items() if k not in ("TORCH_CUDA_ARCH_LIST", "KEXUE_CUDA", "KEXUE_NO_CUDA")}
    r = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True, text=True,
                       env={**clean, **env}, timeout=300)
    assert r.returncode != 0
    assert "kexue build error" in r.stderr and "has no CUDA" in r.stderr and "KEXUE_NO_CUDA=1" in r.stderr
    ok = subprocess.run([sys.executable, "setup.py", "--version"], cwd=ROOT, capture_output=True, text=True,
                        env={**clean, "TORCH_CUDA_ARCH_LIST": "9.0", "KEXUE_NO_CUDA": "1"}, timeout=300)
    assert ok.returncode == 0 and "+cputorch" in ok.stdout
