#!/usr/bin/env bash
# One call on a lent GPU (H100/H200, torch 2.11 + CUDA 13.0, triton 3.6, no network): set-up,
# correctness on CUDA tensors, benchmarks against the peers, compute-sanitizer; stages in order
# of priority, each with its own time limit, all under one deadline, so that a short lease ends
# with the most important results.  Prepare first, on the machine without a GPU:
#   bash bench/gpu_prepare.sh              # .gpu/: prebuilt libraries, peer wheels, MiniLM's shape
# then with the device tool: carry [".gpu"], command
#   bash bench/gpu_session.sh [STAGES]     # STAGES: comma-separated, default "all"
# Stages (in this order within "all"; presets "la", "ce", "probe", "sample" take one op's stages):
#   la-test ce-test probe-test     the test files of each op on CUDA (compiled Triton, autotune off)
#   sample-test                    the sampling tests on CUDA (cuda and Triton kernels against the reference)
#   audit-test                     the GPU-path audit's tests compiled: int64 tile offsets of the Triton
#                                  linear-attention kernels, Triton launches on their tensors' device, the
#                                  shared-memory limit behind backend="auto" (read on the GPU)
#   la-bench ce-bench probe-bench  timings side by side with the peers (issue targets printed)
#   sample-bench                   kexue.sample against HF warpers, compiled HF and FlashInfer (if installed)
#   sanitize[-la|-ce|-probe]       compute-sanitizer memcheck + racecheck of small runs of every
#                                  CUDA kernel (of one op) where the runtime supports it
#   la-bench64 la-check ce-check   D=64 timings; the float64 correctness tables of the check scripts
#   la-check-fp32                  la-check with float16/bfloat16 on the float32 CUDA-core kernels
#   kexue-bench                    `python -m kexue bench --quick` (what `make bench` runs) on the GPU
#   fuzz                           bench/fuzz_ops.py on CUDA (cuda and triton backends), 40 s an op
# Logs: $OUT/<stage>.log (the device tool brings $OUT back), a summary at the end of the output.
# DEADLINE (seconds, default 540) bounds the whole call: a stage starts while 30 s remain, its
# limit cut to what remains.  A 15-minute lease holds one such call; the summary says what is left.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=${OUT:-$ROOT/gpu_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
T0=$(date +%s)
DEADLINE=${DEADLINE:-540}
STAGES=${1:-all}
case $STAGES in  # presets
  all) STAGES=la-test,audit-test,la-bench,ce-test,ce-bench,probe-test,probe-bench,sample-test,sample-bench,sanitize,la-bench64,la-check,la-check-fp32,ce-check,kexue-bench,fuzz ;;
  la) STAGES=la-test,audit-test,la-bench,sanitize-la,la-bench64,la-check,la-check-fp32 ;;
  ce) STAGES=ce-test,ce-bench,sanitize-ce,ce-check ;;
  probe) STAGES=probe-test,probe-bench,sanitize-probe ;;
  sample) STAGES=sample-test,sample-bench ;;
esac
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
unset TRITON_INTERPRET
SUMMARY=$OUT/summary.txt
: > "$SUMMARY"

note() { echo "$*" | tee -a "$SUMMARY"; }
left() { echo $(( DEADLINE - ($(date +%s) - T0) )); }

# stage NAME LIMIT CMD...: runs CMD with a time limit (cut to what the deadline leaves), log in
# $OUT/NAME.log, its tail printed, one line in the summary.
stage() {
  local name=$1 limit=$2; shift 2
  local rest; rest=$(left)
  if (( rest < 30 )); then note "$name: skipped (deadline)"; return 0; fi
  (( limit > rest )) && limit=$rest
  echo "=== $name (limit ${limit}s, $(( $(date +%s) - T0 ))s into the call)"
  local s=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  tail -n "${TAIL:-12}" "$OUT/$name.log"
  note "$name: rc=$rc $(( $(date +%s) - s ))s$([[ $rc == 124 || $rc == 137 ]] && echo ' (time limit)')"
}

# ---- set-up: peers, kexue (prebuilt libraries when the sources match, else a build) ----------
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem,memory.total --format=csv,noheader | tee -a "$SUMMARY"
$PY -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$SUMMARY"
SITE=/tmp/kexue-site
mkdir -p "$SITE"
if compgen -G ".gpu/whl/*.whl" > /dev/null; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target "$SITE" .gpu/whl/*.whl > "$OUT/setup-wheels.log" 2>&1 \
    || note "peer wheels: install failed (see setup-wheels.log)"
fi
export PYTHONPATH=$SITE${PYTHONPATH:+:$PYTHONPATH}
USE_PREBUILT=0
if [[ -f .gpu/lib/SOURCES.sha256 && "$(cat .gpu/lib/SOURCES.sha256)" == "$(bash bench/gpu_sources_hash.sh)" ]]; then
  for f in .gpu/lib/*.so.xz; do xz -dc "$f" > "pyext/$(basename "$f" .xz)"; done
  # kexue without installing: a package folder of links (pyext/ is the package, triton_kernels/ its subpackage)
  KX=/tmp/kexue-links/kexue
  rm -rf /tmp/kexue-links && mkdir -p "$KX"
  for f in pyext/*; do ln -s "$ROOT/$f" "$KX/"; done
  ln -s "$ROOT/triton_kernels" "$KX/triton_kernels"
  export PYTHONPATH=/tmp/kexue-links:$PYTHONPATH
  USE_PREBUILT=1
fi
check_import() { $PY bench/gpu_check_import.py --launch; }
if (( USE_PREBUILT )) && check_import > "$OUT/setup-import.log" 2>&1; then
  note "kexue: prebuilt libraries (.gpu/lib) load and run"
else
  (( USE_PREBUILT )) && note "prebuilt libraries failed: $(tail -n 1 "$OUT/setup-import.log"); building here"
  (( USE_PREBUILT )) || note "no prebuilt libraries for these sources; building here"
  export PYTHONPATH=$SITE
  rm -f pyext/_C*.so
  stage setup-build 300 env TORCH_CUDA_ARCH_LIST=9.0 MAX_JOBS=16 $PY -m pip install --no-build-isolation --no-deps -e .
  check_import > "$OUT/setup-import.log" 2>&1 || { note "kexue does not import: $(tail -n 3 "$OUT/setup-import.log")"; cat "$SUMMARY"; exit 1; }
fi
tail -n 1 "$OUT/setup-import.log"

# ---- stages ----------------------------------------------------------------------------
# -v: one line per test as it ends, so a stage cut by its time limit still says what passed
PYTEST=($PY -m pytest -v -p no:cacheprovider -o addopts= -rfE)
# several workers: the Triton kernels compile (seconds each, one per specialisation) in parallel
$PY -c "import xdist" 2> /dev/null && PYTEST+=(-n "${TEST_WORKERS:-8}")
# a test that hangs (a kernel that never ends) fails alone instead of eating the stage
$PY -c "import pytest_timeout" 2> /dev/null && PYTEST+=(--timeout=90)
SHAPE=.gpu/minilm-shape
IFS=, read -ra LIST <<< "$STAGES"
for st in "${LIST[@]}"; do
  case $st in
  la-test)
    stage la-test 120 env KEXUE_TRITON_AUTOTUNE=off "${PYTEST[@]}" -k cuda \
      tests/test_linear_attention.py tests/test_linear_attention_triton.py tests/test_linear_attention_op.py tests/test_nn.py ;;
  audit-test)
    stage audit-test 60 "${PYTEST[@]}" tests/test_gpu_index_width.py tests/test_triton_launch_device.py \
      tests/test_linear_attention_gpu_limits.py ;;
  ce-test)
    stage ce-test 90 "${PYTEST[@]}" -k cuda tests/test_cross_entropy.py ;;
  probe-test)
    stage probe-test 60 "${PYTEST[@]}" -k cuda tests/test_probe_kernels.py tests/test_probe_engine.py ;;
  sample-test)
    stage sample-test 90 "${PYTEST[@]}" -k cuda tests/test_sampling.py tests/test_semantic_decoding.py ;;
  sample-bench)
    stage sample-bench 120 $PY -m kexue bench --op sample --device cuda --repeats 10 ;;
  la-bench)
    stage la-bench 150 env KEXUE_TRITON_AUTOTUNE=small $PY bench/gpu_check_linear_attention.py --no-check \
      --ns 1024,4096,16384 --ds 128 --repeats 10 --json "$OUT/la_bench_d128.json" ;;
  la-bench64)
    stage la-bench64 120 env KEXUE_TRITON_AUTOTUNE=small $PY bench/gpu_check_linear_attention.py --no-check \
      --ns 1024,4096,16384 --ds 64 --repeats 10 --json "$OUT/la_bench_d64.json" ;;
  ce-bench)
    stage ce-bench 90 $PY bench/gpu_check_cross_entropy.py --no-check ;;
  probe-bench)
    stage probe-bench 90 $PY bench/probe_timing.py --device cuda --model "$SHAPE" --random-init --sentences 100 ;;
  la-check)
    stage la-check 120 env KEXUE_TRITON_AUTOTUNE=off $PY bench/gpu_check_linear_attention.py --quick --no-bench ;;
  la-check-fp32)  # float16/bfloat16 on the float32 CUDA-core kernels instead of tensor cores
    stage la-check-fp32 90 env KEXUE_LA_CUDA_MATH=fp32 $PY bench/gpu_check_linear_attention.py --quick --no-bench ;;
  ce-check)
    stage ce-check 120 $PY bench/gpu_check_cross_entropy.py --no-bench ;;
  sanitize|sanitize-la|sanitize-ce|sanitize-probe)
    if ! compute-sanitizer --version > /dev/null 2>&1; then note "$st: no compute-sanitizer"; continue; fi
    ops=${st#sanitize}; ops=${ops#-}; ops=${ops:-la,ce,probe}
    for tool in memcheck racecheck; do
      stage "$st-$tool" 100 compute-sanitizer --tool "$tool" --error-exitcode 1 \
        $PY bench/gpu_small_runs.py --model "$SHAPE" --ops "$ops"
    done ;;
  kexue-bench)
    stage kexue-bench 120 $PY -m kexue bench --quick ;;
  fuzz)
    stage fuzz-la 50 env KEXUE_TRITON_AUTOTUNE=off $PY bench/fuzz_ops.py --op la --seconds 40 --device cuda \
      --backends cuda,triton
    stage fuzz-ce 50 $PY bench/fuzz_ops.py --op ce --seconds 40 --device cuda --backends cuda,triton ;;
  *) note "unknown stage $st" ;;
  esac
done

echo
echo "=== summary ($(( $(date +%s) - T0 ))s)"
cat "$SUMMARY"
for f in la-bench la-bench64; do [[ -f $OUT/$f.log ]] && sed -n '/^targets/,$p' "$OUT/$f.log"; done
for f in ce-bench probe-bench sample-bench; do [[ -f $OUT/$f.log ]] && { echo "--- $f"; tail -n 14 "$OUT/$f.log"; }; done
for f in la-test audit-test ce-test probe-test sample-test; do
  [[ -f $OUT/$f.log ]] || continue
  echo "--- $f: $(grep -c -E ' PASSED ' "$OUT/$f.log") passed, $(grep -c -E ' (FAILED|ERROR) ' "$OUT/$f.log") failed"
  grep -E "^(FAILED|ERROR) " "$OUT/$f.log" | head -n 8
  tail -n 1 "$OUT/$f.log"
done
