"""What a wheel's Python part holds: every module and data file of the source tree.

A wheel built while setup.py listed its packages by hand lacked kexue.decoding, kexue.attribution
and kexue.theseus, and `import kexue` failed in a fresh venv. ``setup.py build_py`` copies exactly
what bdist_wheel packs (the compiled libraries aside), in seconds and without a compiler. It runs
in a copy of the tree without kexue.egg-info: in a checkout with an editable install, setuptools
reads that folder's SOURCES.txt and copies every file as package data, which hid the bug.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_SUFFIXES = (".so", ".pyc")
# what setup.py reads: itself, its metadata, the packages, the source list and tools/build_config.py
BUILD_INPUTS = ("setup.py", "pyproject.toml", "README.md", "pyext", "triton_kernels", "csrc", "tools")


def source_files(folder: Path) -> set[str]:
    """Files of a package folder, relative to it; symbolic links (a dev checkout's) excluded."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(folder):  # os.walk does not follow links
        dirnames[:] = [d for d in dirnames if d != "__pycache__" and not (Path(dirpath) / d).is_symlink()]
        found |= {str((Path(dirpath) / f).relative_to(folder)) for f in filenames if not f.endswith(SKIP_SUFFIXES)}
    return found


@pytest.mark.skipif(not (ROOT / "pyext").is_dir(), reason="needs the source tree (not an installed wheel)")
def test_build_py_copies_every_module_and_data_file(tmp_path):
    tree, out = tmp_path / "tree", tmp_path / "lib"
    tree.mkdir()
    for name in BUILD_INPUTS:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, tree / name, symlinks=True, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
        else:
            shutil.copy2(src, tree / name)
    env = {**os.environ, "KEXUE_NO_CUDA": "1"}
    env.pop("TORCH_CUDA_ARCH_LIST", None)
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(out)], cwd=tree,
                   env=env, check=True, capture_output=True, timeout=300)
    built = source_files(out / "kexue")
    expected = source_files(ROOT / "pyext") | {f"triton_kernels/{f}" for f in source_files(ROOT / "triton_kernels")}
    assert expected - built == set(), "setup.py leaves these out of the wheel"
    assert "decoding/__init__.py" in built and "probe/data/ud-english-pud/en_pud-ud-test.conllu" in built
