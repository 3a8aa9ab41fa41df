#!/usr/bin/env bash
# One sha256 over everything the compiled libraries are built from (csrc/, setup.py,
# pyproject.toml): gpu_prepare.sh records it beside the prebuilt libraries, gpu_session.sh
# compares it with the tree it runs on and rebuilds when they differ.
set -euo pipefail
cd "$(dirname "$0")/.."
find csrc setup.py pyproject.toml -type f \( -name '*.cpp' -o -name '*.cu' -o -name '*.cuh' -o -name '*.h' \
  -o -name '*.txt' -o -name '*.py' -o -name '*.toml' \) -print0 | sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1
