"""Compatibility shims for the supported triton versions (3.2 to 3.9), almost all for running the
kernels under TRITON_INTERPRET=1; :func:`apply_interpreter_shims` applies them all, each only
where its interpreter needs it.  Nothing here changes a compiled kernel.

* patch_interpreter_index (triton <= 3.5 with numpy >= 2.4): loop bounds from one-element arrays.
* memoize_interpreter_patching (triton 3.2-3.5): speed only.
* patch_interpreter_reserved_kwargs (triton 3.2): autotune configs' extra launch options.
* patch_interpreter_scalar_mask (triton 3.2): a store with a False scalar mask was unmasked.
* patch_interpreter_int1_type (triton 3.2): ``~`` of a boolean.
* patch_interpreter_bool_masks (triton 3.9): int1 masks with int32 data.
* patch_interpreter_bf16 (triton 3.2-3.9): ``tl.dot`` of bfloat16 operands, casts to bfloat16.
* autotune (triton 3.2, 3.3; compiled too): decorating needs no GPU driver.
* HAS_FP64_DOT: triton 3.2-3.4 have no float64 ``tl.dot``.

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


def launch(kernel, grid, *args, **kwargs) -> None:
    """One kernel launch: ``launchable(kernel)[grid](*args, **kwargs)``, on its tensors' device.
    Each kernel module binds it as its ``_launch``, which bench/triton_aot_check.py replaces to
    compile for a GPU target instead of running.

    Triton launches on the *current* CUDA device, on that device's current stream.  A call with
    tensors on another GPU (cuda:1 while cuda:0 is current: a model spread over GPUs with
    ``device_map="auto"``) would run the kernel on the wrong device, on a stream that does not
    wait for the kernels that wrote its inputs (an illegal address, or silently stale data
    through peer access).  So the launch runs under ``torch.cuda.device(d)``, d the device of the
    first CUDA tensor argument, when d is not the current device (as the C++ ops' CUDAGuard
    does; not while torch.compile traces: Inductor's own launches carry a device guard)."""
    device = _other_cuda_device(args)
    if device is None:
        launchable(kernel)[grid](*args, **kwargs)
        return
    import torch

    with torch.cuda.device(device):
        launchable(kernel)[grid](*args, **kwargs)


def _other_cuda_device(args):
    """The device of the first CUDA tensor in args if it is not the current CUDA device, else None
    (no CUDA tensor, the current device, or torch.compile tracing)."""
    import torch

    for a in args:
        if isinstance(a, torch.Tensor) and a.device.type == "cuda":
            if a.device.index is None or torch.compiler.is_compiling():
                return None
            return a.device if a.device.index != torch.cuda.current_device() else None
    return None


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




def patch_interpreter_reserved_kwargs() -> None:
    """triton 3.2's interpreter drops only the launch options it lists in ``RESERVED_KWS``
    (num_warps, num_stages, ...) from a launch's keywords, but its ``Config.all_kwargs()`` also
    passes num_buffers_warp_spec, num_consumer_groups, reg_dec_producer and reg_inc_consumer, so
    every autotuned kernel failed with "got an unexpected keyword argument 'num_buffers_warp_spec'".
    triton 3.3 keeps only the kernel's own arguments instead (and has no RESERVED_KWS); for 3.2,
    list the Config's other options as reserved too.  Nothing changes for compiled kernels."""
    try:
        import triton
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover
        return
    reserved = getattr(interpreter, "RESERVED_KWS", None)
    if not isinstance(reserved, list):
        return
    for name in triton.Config({}).all_kwargs():
        if name not in reserved:
            reserved.append(name)



def _with_mask_replaced(original, params: list[str], replace):
    """``original`` whose ``mask`` argument (positional at its place in ``params``, or keyword)
    is passed through ``replace`` first; ``replace`` returns the new mask, or None to keep it."""
    index = params.index("mask")

    def patched(*args, **kwargs):
        positional = len(args) > index
        new = replace(args[index] if positional else kwargs.get("mask"))
        if new is not None:
            if positional:
                args = (*args[:index], new, *args[index + 1:])
            else:
                kwargs["mask"] = new
        return original(*args, **kwargs)

    patched._kexue_patched = True
    return patched


def patch_interpreter_scalar_mask() -> None:
    """triton 3.2's ``tl.store`` (semantic._store_legacy) and atomics (atom_red_typechecking_impl)
    test ``if not mask:`` where they mean ``if mask is None:``.  Compiled, a tensor is always
    truthy; under the interpreter a one-element tensor converts to its value, so a store whose
    scalar mask is False became an unmasked store (the cross-entropy and probe error flags were
    set for valid inputs).  triton 3.3 tests ``mask is None``.  For 3.2 the mask reaches these
    functions as a tensor that is always truthy, as it is when compiled."""
    import inspect

    try:
        import triton.language as tl
        from triton.language import semantic
    except ImportError:  # pragma: no cover
        return

    class _TruthyMask(tl.tensor):
        def __bool__(self):
            return True

    for name in ("_store_legacy", "atom_red_typechecking_impl"):
        original = getattr(semantic, name, None)  # module functions up to 3.3, methods of a class after
        if not inspect.isfunction(original) or getattr(original, "_kexue_patched", False):
            continue
        try:
            if "if not mask:" not in inspect.getsource(original):
                continue
        except OSError:  # pragma: no cover - no source
            continue
        def truthy(mask):
            if not isinstance(mask, tl.tensor) or isinstance(mask, _TruthyMask):
                return None
            out = object.__new__(_TruthyMask)
            out.__dict__.update(mask.__dict__)
            return out

        setattr(semantic, name, _with_mask_replaced(original, list(inspect.signature(original).parameters), truthy))


def patch_interpreter_int1_type() -> None:
    """triton 3.2's interpreter cannot invert a boolean (``~mask``): ``semantic.invert`` asks the
    builder for ``get_int1_ty()``, which its InterpreterBuilder lacks ("'InterpreterBuilder' object
    has no attribute 'get_int1_ty'"), and then for an all-ones value, which it only makes for
    integer types ("unsupported type int1").  triton 3.3 no longer goes through either for int1;
    give the 3.2 builder both (all ones of int1 is True, so ``~x`` stays ``x xor True``)."""
    try:
        import numpy as np
        import triton.language as tl
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover
        return
    builder = getattr(interpreter, "InterpreterBuilder", None)
    if builder is None or hasattr(builder, "get_int1_ty"):
        return
    original = builder.get_all_ones_value

    def get_all_ones_value(self, type):
        if type == tl.int1:
            return interpreter.TensorHandle(np.full(1, True, dtype=np.bool_), tl.int1)
        return original(self, type)

    builder.get_int1_ty = lambda self: tl.int1
    builder.get_all_ones_value = get_all_ones_value


def patch_interpreter_bool_masks() -> None:
    """triton 3.9's interpreter can hand a load or store an int1 mask whose numpy data is int32:
    a comparison's result carries its operands' dtype in the handle, so splatting a scalar
    comparison (``kmask & (i_v == 0)``) fills an int32 array, and the C++ load/store refuse it
    ("mask has unsupported dtype"; every linear-attention kernel storing its state failed).  The
    frontend has already checked that the mask is int1, so its data is converted to bool there;
    masks that already are bool (every mask of the earlier interpreters) pass unchanged."""
    import inspect

    try:
        import numpy as np
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover
        return
    builder = getattr(interpreter, "InterpreterBuilder", None)
    if builder is None:
        return
    for name in ("create_masked_load", "create_masked_store", "create_atomic_rmw", "create_atomic_cas"):
        original = getattr(builder, name, None)
        if original is None or getattr(original, "_kexue_patched", False):
            continue
        try:
            params = list(inspect.signature(original).parameters)
        except (TypeError, ValueError):  # pragma: no cover
            continue
        if "mask" not in params:
            continue
        def as_bool(mask):
            data = getattr(mask, "data", None)
            if isinstance(data, np.ndarray) and data.dtype != np.bool_:
                return interpreter.TensorHandle(data.astype(np.bool_), mask.dtype)
            return None

        setattr(builder, name, _with_mask_replaced(original, params, as_bool))  # params count self


def patch_interpreter_bf16() -> None:
    """The interpreter stores bfloat16 as its bit pattern in numpy uint16 (numpy has no
    bfloat16), and two of its operations get that wrong, which made every bfloat16 Triton kernel
    untestable on the CPU:

    * ``tl.dot`` hands the bit patterns to ``np.matmul`` as integers (it widens only 8-bit
      floats): results near 1e10.  bfloat16 operands are now widened to float32 first (the bits
      shifted into the high half: exact), so the dot is what a tensor core computes: exact
      products accumulated in float32.
    * casts to bfloat16 (``x.to(tl.bfloat16)``, and a float32 value stored to a bfloat16
      pointer) truncate the mantissa instead of rounding to nearest even as the GPU does, and
      casts between bfloat16 and anything but float32 convert the bit patterns as integers.
      Casts from or to bfloat16 now go through torch's conversion (round to nearest even, NaN,
      infinities and overflow as on the GPU); widening is exact.

    Nothing changes for other dtypes, nor where an interpreter's bfloat16 data is not uint16."""
    try:
        import numpy as np
        import torch
        import triton.language as tl
        from triton.runtime import interpreter
    except ImportError:  # pragma: no cover
        return
    builder = getattr(interpreter, "InterpreterBuilder", None)
    dot, cast = getattr(builder, "create_dot", None), getattr(builder, "cast_impl", None)
    if dot is None or cast is None or getattr(dot, "_kexue_patched", False):
        return

    def is_bf16_bits(h) -> bool:
        return h.dtype.scalar == tl.bfloat16 and h.data.dtype == np.uint16

    def widened(h):
        """A bfloat16 handle as float32 (exact); any other handle unchanged."""
        if is_bf16_bits(h):
            return interpreter.TensorHandle((h.data.astype(np.uint32) << 16).view(np.float32), tl.float32)
        return h

    def create_dot(self, a, b, d, *args, **kwargs):
        return dot(self, widened(a), widened(b), d, *args, **kwargs)

    def cast_impl(self, src, dst_type):
        if is_bf16_bits(src):
            src = widened(src)
            if dst_type.scalar == tl.float32:
                return src
        if dst_type.scalar == tl.bfloat16 and src.dtype.scalar != tl.bfloat16:
            data = torch.from_numpy(np.array(src.data, order="C")).to(torch.bfloat16)  # 0-d stays 0-d
            return interpreter.TensorHandle(data.view(torch.int16).numpy().view(np.uint16), tl.bfloat16)
        return cast(self, src, dst_type)

    create_dot._kexue_patched = True
    builder.create_dot = create_dot
    builder.cast_impl = cast_impl


def apply_interpreter_shims() -> None:
    """Every shim above; each one checks that its interpreter needs it.  Called by the kernel
    modules when TRITON_INTERPRET=1."""
    patch_interpreter_index()
    memoize_interpreter_patching()
    patch_interpreter_reserved_kwargs()
    patch_interpreter_scalar_mask()
    patch_interpreter_int1_type()
    patch_interpreter_bool_masks()
    patch_interpreter_bf16()


def autotune(configs, key):
    """``triton.autotune(configs=configs, key=key)`` whose decoration needs no GPU.

    triton 3.2 and 3.3 resolve the benchmarker in ``Autotuner.__init__``
    (``driver.active.get_benchmarker()``), which raises "0 active drivers" on a machine without a
    GPU: importing the kernels failed under TRITON_INTERPRET=1 and in bench/triton_aot_check.py.
    triton 3.4 made it a lazy property (``Autotuner.do_bench``).  For older versions the Autotuner
    gets a ``do_bench`` that looks the same benchmarker up when it is first called; it is built
    directly because triton 3.2's ``autotune()`` does not forward ``do_bench`` (3.3 does).
    Autotuning itself is unchanged (and never runs on CPU: the interpreter has one config)."""
    import triton
    from triton.runtime.autotuner import Autotuner

    if isinstance(getattr(Autotuner, "do_bench", None), property):  # triton >= 3.4
        return triton.autotune(configs=configs, key=key)

    def do_bench(kernel_call, quantiles):
        from triton.runtime.driver import driver

        return driver.active.get_benchmarker()(kernel_call, quantiles=quantiles)

    return lambda fn: Autotuner(fn, fn.arg_names, configs, key, None, None, do_bench=do_bench)


def triton_version() -> tuple[int, int]:
    """(major, minor) of the installed triton."""
    import triton

    major, minor = triton.__version__.split(".")[:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


# triton 3.2-3.4: tl.dot rejects float64 operands ("Unsupported lhs dtype fp64", compiled and
# interpreted alike); float64 dots came with triton 3.5.
HAS_FP64_DOT = triton_version() >= (3, 5)
