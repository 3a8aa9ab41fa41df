# Two commands do all the set-up on a fresh machine: `make bench` and `make test`.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
# A machine that already has torch (the GPU machines: torch 2.11 + CUDA) keeps it;
# elsewhere CI's pins are installed (torch 2.13.0 CPU build).
REQS ?= requirements/ci-cpu.txt
NODEPS ?= requirements/ci-nodeps.txt
JOBS ?= 2

.PHONY: install install-full test bench lint cuda-check clean wheel wheel-check

# `make install` is incremental: build/install-stamp records hashes of what the install depends
# on.  Nothing changed: nothing runs.  Only csrc/ changed: the extension is rebuilt in place by
# ninja, which recompiles only the changed sources (and those including changed headers).
# setup.py, pyproject.toml or requirements/ changed, or kexue does not import from this tree:
# the full install.  `make install FORCE=1` (or deleting the stamp) forces the full install.
STAMP := build/install-stamp
hash_of = $(shell find $(1) -type f -not -name '*.pyc' 2>/dev/null | LC_ALL=C sort | xargs cat 2>/dev/null | sha256sum | cut -c1-16)
DEPS_HASH = $(call hash_of,setup.py pyproject.toml requirements)
CSRC_HASH = $(call hash_of,csrc)
# torch is there, kexue is found in this tree (no import: that would load torch) and so is its library
INSTALLED = $(PYTHON) -c "import importlib.util as u, pathlib, sys; s = u.find_spec('kexue'); \
	sys.exit(u.find_spec('torch') is None or s is None or pathlib.Path(s.origin).resolve().parent != pathlib.Path('pyext').resolve())" \
	2>/dev/null && ls pyext/_C*.so >/dev/null 2>&1
# a compiler cache, where there is one, makes even a full rebuild of unchanged sources quick
CCACHE_DIR_BIN = $(shell command -v ccache >/dev/null 2>&1 && mkdir -p build/ccache-bin && \
	for c in gcc g++ cc c++; do ln -sf "$$(command -v ccache)" build/ccache-bin/$$c; done && echo $(CURDIR)/build/ccache-bin)
BUILD_ENV = MAX_JOBS=$(JOBS) $(if $(CCACHE_DIR_BIN),PATH="$(CCACHE_DIR_BIN):$$PATH" CCACHE_BASEDIR=$(CURDIR))

install:
	@deps="$(DEPS_HASH)"; csrc="$(CSRC_HASH)"; \
	old_deps=$$(sed -n 1p $(STAMP) 2>/dev/null); old_csrc=$$(sed -n 2p $(STAMP) 2>/dev/null); \
	if [ -z "$(FORCE)" ] && [ "$$deps" = "$$old_deps" ] && $(INSTALLED); then \
		if [ "$$csrc" = "$$old_csrc" ]; then echo "make install: up to date ($(STAMP))"; \
		else echo "make install: csrc/ changed, rebuilding the extension in place (changed sources only)"; \
			$(BUILD_ENV) $(PYTHON) setup.py -q build_ext --inplace || exit 1; \
		fi; \
	else \
		echo "make install: full install (setup.py, pyproject.toml or requirements changed, or first run)"; \
		$(MAKE) --no-print-directory install-full || exit 1; \
	fi; \
	mkdir -p build && printf '%s\n%s\n' "$$deps" "$$csrc" > $(STAMP)

install-full:
	@$(PYTHON) -c "import torch" 2>/dev/null || $(PIP) install -q -r $(REQS)
	@# the test/probe tools without torch and triton: a machine's own torch (and its triton) stay
	@$(PYTHON) -c "import pytest, hypothesis, pytest_benchmark, transformers, matplotlib, tqdm" 2>/dev/null || \
		sed -e 's/#.*//' $(REQS) | grep -v -E '^(torch|triton)[=<>]' | xargs $(PIP) install -q
	@# pinned, without their declared dependencies; pip skips those already installed
	$(PIP) install -q --no-deps -r $(NODEPS)
	$(PIP) install -q --no-deps -r requirements/bench.txt
	$(BUILD_ENV) $(PIP) install -q --no-build-isolation --no-deps -e .

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
