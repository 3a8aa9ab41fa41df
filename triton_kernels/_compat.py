"""Compatibility shims for running the kernels under TRITON_INTERPRET=1.

triton <= 3.5's interpreter converts a loop bound with ``int(handle.data)``, where the data of a
scalar is a one-element numpy array; numpy >= 2.4 refuses that conversion ("only 0-dimensional
arrays can be converted to Python scalars"), so every ``for i in range(lo, hi)`` with runtime
bounds fails.  Upstream fixed it (triton-lang/triton#9171) by squeezing the array first; this
applies the same one-line fix to older interpreters.  Nothing changes for compiled kernels.
"""

from __future__ import annotations

import os

#: Triton's interpreter mode (read once, as @triton.jit reads it when it decorates).
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


def launchable(kernel):
    """A kernel as the ops launch it: through ``torch.library.wrap_triton`` on a GPU (so that
    torch.compile sees inside the ``triton_op``), as-is under the interpreter, whose kernels are
    Python functions that tracing never reaches and that torch <= 2.11's wrap_triton refuses
    ("wrap_triton only works on functions annotated with triton.jit")."""
    if INTERPRET:
        return kernel
    import torch

    return torch.library.wrap_triton(kernel)


def patch_interpreter_index() -> None:
    try:
        import numpy as np
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover - no triton, or an interpreter without this layout
        return
    original = getattr(interpreter, "_patch_lang_tensor", None)
    if original is None or getattr(original, "_kexue_patched", False):
        return

    def _index(self):
        return int(np.asarray(self.handle.data).reshape(-1)[0])

    def patched(tensor, *args, **kwargs):
        result = original(tensor, *args, **kwargs)
        tensor.__index__ = _index
        return result

    patched._kexue_patched = True
    interpreter._patch_lang_tensor = patched


def memoize_interpreter_patching() -> None:
    """The triton 3.2-3.5 interpreter re-patches triton.language (a few ms of inspect.getmembers)
    on every call of a @triton.jit helper, although the patch is permanent and the same every
    time; remember what was patched instead.  Skipped for interpreters that undo their patches
    after each launch (newer ones, whose _patch_lang takes a scope)."""
    import inspect

    try:
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover
        return
    original = getattr(interpreter, "_patch_lang", None)
    if original is None or getattr(original, "_kexue_patched", False) or hasattr(interpreter, "_LangPatchScope"):
        return
    if len(inspect.signature(original).parameters) != 1:
        return
    done: set[tuple[int, ...]] = set()

    def patched(fn):
        key = tuple(sorted(id(v) for v in fn.__globals__.values() if inspect.ismodule(v)))
        if key in done:
            return
        original(fn)
        done.add(key)

    patched._kexue_patched = True
    interpreter._patch_lang = patched
