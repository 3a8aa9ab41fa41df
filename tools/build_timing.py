"""Clean-build and one-file-rebuild cost of the CPU library, per compiler call (issue 21, item 5).

For each git revision: a fresh clone, ``python setup.py build_ext --inplace`` with ccache off and
a g++ wrapper that logs each compiler call's CPU seconds (user + sys) and wall seconds; then one
file is touched and the build rerun. CPU seconds carry from a shared machine to an idle one far
better than wall time, so the table also replays the logged CPU seconds on ``--jobs`` idle
workers in the order ninja started them (the link last): the estimated wall time.

    python tools/build_timing.py 24a73e1^ HEAD \\
        --touch csrc/linear_attention/linear_attention_cpu.cpp csrc/linear_attention/la_cpu_fwd_f32.cpp
"""

from __future__ import annotations

import argparse
import heapq
import os
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WRAPPER = """#!/bin/bash
out=unknown; prev=""
for a in "$@"; do [ "$prev" = "-o" ] && out=$a; prev=$a; done
exec /usr/bin/time -a -o "$KEXUE_TU_LOG" -f "%U %S %e $(basename "$out")" {cxx} "$@"
"""


def read_log(path: Path) -> list[tuple[float, str]]:
    """(CPU seconds, output name) per compiler call that wrote a file (object or library)."""
    rows = []
    for line in path.read_text().splitlines():
        user, system, _wall, name = line.split(maxsplit=3)
        if name != "unknown":  # the build's compiler probes
            rows.append((float(user) + float(system), name))
    return rows


def replay(rows: list[tuple[float, str]], jobs: int) -> float:
    """Wall seconds on ``jobs`` idle workers: objects greedily in log order, then the link."""
    workers = [0.0] * jobs
    for cpu, name in rows:
        if name.endswith(".o"):
            heapq.heapreplace(workers, workers[0] + cpu)
    return max(workers) + sum(cpu for cpu, name in rows if not name.endswith(".o"))


def build(tree: Path, log: Path, jobs: int, wrapper: Path) -> float:
    env = dict(os.environ, CCACHE_DISABLE="1", MAX_JOBS=str(jobs), KEXUE_NO_CUDA="1",
               CXX=str(wrapper), KEXUE_TU_LOG=str(log))
    start = time.perf_counter()
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=tree, env=env,
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("revs", nargs="+", help="git revisions to build")
    ap.add_argument("--touch", nargs="+", required=True, help="the file to touch per revision")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--cxx", default="g++")
    args = ap.parse_args(argv)
    if len(args.touch) != len(args.revs):
        ap.error("--touch needs one file per revision")
    print(f"| revision | build | units | CPU s, all | longest unit (CPU s) | est. wall on {args.jobs} idle cores "
          "| measured wall |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="kexue-build-timing-") as tmp:
        wrapper = Path(tmp) / "cxx"
        wrapper.write_text(WRAPPER.format(cxx=args.cxx))
        wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
        for rev, touch in zip(args.revs, args.touch, strict=True):
            tree = Path(tmp) / rev.replace("/", "_").replace("^", "_parent")
            subprocess.run(["git", "clone", "-q", str(ROOT), str(tree)], check=True)
            subprocess.run(["git", "checkout", "-q", rev], cwd=tree, check=True)
            for kind in ("clean", f"touch {touch}"):
                if kind != "clean":
                    time.sleep(1.1)  # a later mtime than the object's
                    (tree / touch).touch()
                log = Path(tmp) / f"{tree.name}-{kind.split()[0]}.log"
                wall = build(tree, log, args.jobs, wrapper)
                rows = read_log(log)
                units = [r for r in rows if r[1].endswith(".o")]
                longest = max(units, default=(0.0, "-"))
                print(f"| {rev} | {kind} | {len(units)} | {sum(c for c, _ in rows):.1f} | {longest[0]:.1f} "
                      f"(`{longest[1]}`) | {replay(rows, args.jobs):.0f} s | {wall:.0f} s |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
