"""What each ``TORCH_CUDA_ARCH_LIST`` costs: build time and size of the CUDA kernels (issue 21).

Compiles the torch-free kernels (``cuda_kernel`` lines of csrc/sources.txt) with the flags the
wheel uses (setup.py: -O3, --use_fast_math, no -lineinfo) and torch's own ``-gencode`` flags for
each architecture list, links them into one stripped shared library and reports, per list:

* wall and CPU seconds of the nvcc calls (``--jobs`` at a time, as ninja runs them in the wheel);
* the stripped library's size, and its deflate-compressed size (what it adds to a wheel);
* cuobjdump's cubins and PTX, so the table shows what each setting holds.

The three torch bindings and the CPU library are the same for every setting and not included:
add their share from a measured wheel (bench/RESULTS.md gives the sm_90 wheel).

    python tools/cuda_arch_cost.py "9.0" "8.0;9.0+PTX" --jobs 2
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# The nvcc flags of setup.py's release build (kexue._C_cuda), host flags aside.
WHEEL_NVCC_FLAGS = ["-O3", "-std=c++17", "--expt-relaxed-constexpr", "--use_fast_math",
                    "-Xcompiler=-fPIC", "-Xcompiler=-O3"]
DEFLATE_LEVEL = 6  # zipfile's default level, which wheel files use


def kernel_sources() -> list[Path]:
    lines = (ROOT / "csrc" / "sources.txt").read_text().splitlines()
    return [ROOT / m.group(1) for line in lines if (m := re.match(r"cuda_kernel\s+(\S+)", line))]


def gencode_flags(arch_list: str) -> list[str]:
    from torch.utils import cpp_extension

    old = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch_list
    try:
        return cpp_extension._get_cuda_arch_flags()
    finally:
        if old is None:
            del os.environ["TORCH_CUDA_ARCH_LIST"]
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = old


def find_cuobjdump(nvcc: str) -> str:
    """cuobjdump from PATH, beside nvcc, or the copy Triton ships (a toolkit may lack it)."""
    import importlib.util

    triton = importlib.util.find_spec("triton")
    candidates = [shutil.which("cuobjdump"), str(Path(nvcc).resolve().with_name("cuobjdump"))]
    if triton and triton.origin:
        candidates.append(str(Path(triton.origin).parent / "backends" / "nvidia" / "bin" / "cuobjdump"))
    found = next((c for c in candidates if c and Path(c).is_file()), None)
    if found is None:
        sys.exit(f"cuda_arch_cost: cuobjdump not found (looked at {candidates})")
    return found


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure(arch_list: str, nvcc: str, jobs: int, workdir: Path) -> dict:
    flags = gencode_flags(arch_list)
    sources = kernel_sources()
    objs = [workdir / f"{i:02d}_{src.stem}.o" for i, src in enumerate(sources)]

    def compile_one(pair: tuple[Path, Path]) -> None:
        src, obj = pair
        cmd = [nvcc, "-c", str(src), "-o", str(obj), f"-I{ROOT / 'csrc'}", *WHEEL_NVCC_FLAGS, *flags]
        subprocess.run(cmd, check=True)

    cpu0, wall0 = children_cpu_seconds(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        list(pool.map(compile_one, zip(sources, objs, strict=True)))
    lib = workdir / "kernels.so"
    subprocess.run([nvcc, "-shared", "-o", str(lib), *map(str, objs), *flags], check=True)
    wall, cpu = time.perf_counter() - wall0, children_cpu_seconds() - cpu0
    subprocess.run(["strip", str(lib)], check=True)
    data = lib.read_bytes()
    cuobjdump = find_cuobjdump(nvcc)
    listing = subprocess.run([cuobjdump, "--list-elf", "--list-ptx", str(lib)],
                             capture_output=True, text=True).stdout
    return {
        "arch_list": arch_list,
        "gencode": " ".join(flags),
        "sources": len(sources),
        "wall_s": wall,
        "cpu_s": cpu,
        "size_mib": len(data) / 2**20,
        "deflated_mib": len(zlib.compress(data, DEFLATE_LEVEL)) / 2**20,
        "cubins": sorted(set(re.findall(r"\.(sm_\d+a?)\.cubin", listing))),
        "ptx": sorted(set(re.findall(r"\.(sm_\d+a?)\.ptx", listing))),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("arch_lists", nargs="+", help='e.g. "9.0" "8.0;9.0+PTX"')
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--nvcc", default=shutil.which("nvcc"))
    args = parser.parse_args(argv)
    if not args.nvcc:
        sys.exit("cuda_arch_cost: nvcc not found (put it on PATH or pass --nvcc)")
    find_cuobjdump(args.nvcc)  # fail before compiling, not after
    version = subprocess.run([args.nvcc, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"nvcc: {version.splitlines()[-1]}; jobs {args.jobs}; {os.cpu_count()} CPUs")
    print("| TORCH_CUDA_ARCH_LIST | nvcc -gencode | cubins | PTX | wall s | CPU s | stripped MiB | deflated MiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for arch_list in args.arch_lists:
        with tempfile.TemporaryDirectory(prefix="kexue-arch-cost-") as tmp:
            r = measure(arch_list, args.nvcc, args.jobs, Path(tmp))
        print(f"| `{r['arch_list']}` | `{r['gencode']}` | {', '.join(r['cubins'])} | {', '.join(r['ptx']) or '-'} "
              f"| {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['size_mib']:.2f} | {r['deflated_mib']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
