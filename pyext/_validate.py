"""One validation path for every public function, the same in eager and compiled calls.

Scalars: :func:`as_int` and :func:`as_float` accept what a Python number accepts (numpy
numbers, 0-d tensors) and reject bool, NaN and ±inf, with a ``TypeError``/``ValueError`` that
names the argument and the expected form.  Tensor values: :func:`check_values` reads the data
eagerly on CPU tensors (a ``ValueError`` naming the first bad entry) and otherwise, including
under ``torch.compile``, emits ``torch._assert_async`` (a ``RuntimeError`` naming the argument
when the graph runs), so a compiled call never returns a silent inf/nan where eager raises.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Callable

import numpy as np
import torch

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)  # what every op accepts


def check_float_matrix(t: object, name: str, shape: str) -> None:
    """``t`` is a 2-D floating tensor (``shape`` names its dimensions in the message, e.g. "(N, C)")."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != 2:
        raise ValueError(f"{name} must have shape {shape}, got {tuple(t.shape)}")
    if t.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return repr(value)


def as_int(name: str, value: object, *, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` as a Python int: int, numpy integer or 0-d integer tensor (not bool, not float)."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise TypeError(f"{name} must be an int, got {_describe(value)}")
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.is_floating_point() or value.is_complex():
            raise TypeError(f"{name} must be an int (or a 0-d integer tensor), got {_describe(value)}")
        out = int(value)
    else:
        try:
            out = operator.index(value)
        except TypeError:
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None
    if minimum is not None and out < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {out}")
    if maximum is not None and out > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {out}")
    return out


def is_int(value: object) -> bool:
    """``value`` is what :func:`as_int` accepts: an int, a numpy integer or a 0-d integer tensor
    (not a bool)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not (value.is_floating_point() or value.is_complex() or value.dtype == torch.bool)
    return isinstance(value, (int, np.integer))


def is_real(value: object) -> bool:
    """``value`` is a real number: int, float, numpy number or 0-d real tensor (not a bool)."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not (value.is_complex() or value.dtype == torch.bool)
    return isinstance(value, numbers.Real)


def as_bool(name: str, value: object) -> bool:
    """``value`` as a Python bool: bool, numpy bool or 0-d bool tensor (a string or a number is an
    error: ``causal="no"`` must not mean True)."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, torch.Tensor) and value.dim() == 0 and value.dtype == torch.bool:
        return bool(value)
    raise TypeError(f"{name} must be a bool, got {type(value).__name__} {value!r}")


def as_float(name: str, value: object, *, minimum: float | None = None, maximum: float | None = None,
             open_min: bool = False, finite: bool = True) -> float:
    """``value`` as a finite Python float: int, float, numpy number or 0-d real tensor (not bool).

    ``minimum``/``maximum`` are inclusive bounds (``open_min``: ``value > minimum``)."""
    if isinstance(value, bool) or (isinstance(value, torch.Tensor) and value.dtype == torch.bool):
        raise TypeError(f"{name} must be a float, got {_describe(value)}")
    if isinstance(value, torch.Tensor):
        if value.dim() != 0 or value.is_complex():
            raise TypeError(f"{name} must be a float (or a 0-d tensor), got {_describe(value)}")
        out = float(value)
    elif isinstance(value, numbers.Real):
        out = float(value)
    else:
        raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")
    if math.isnan(out) or (finite and math.isinf(out)):
        raise ValueError(f"{name} must be a {'finite float' if finite else 'float, not NaN'}, got {out!r}")
    if minimum is not None and (out <= minimum if open_min else out < minimum):
        raise ValueError(f"{name} must be a float {'>' if open_min else '>='} {minimum}, got {out!r}")
    if maximum is not None and out > maximum:
        raise ValueError(f"{name} must be a float <= {maximum}, got {out!r}")
    return out


def unwrap_functorch(t: torch.Tensor) -> torch.Tensor:
    """The plain tensor under torch.func's wrappers (vmap's batched tensors, grad/jvp's tracking
    tensors), batch dimensions first: what a value check reads, so a check also holds inside transforms (a batched
    tensor's values cannot steer Python, its unwrapped storage can)."""
    F = torch._C._functorch
    while F.is_functorch_wrapped_tensor(t):
        bdim = F.maybe_get_bdim(t) if F.is_batchedtensor(t) else -1
        t = F.get_unwrapped(t)
        if bdim > 0:
            t = t.movedim(bdim, 0)  # batch dims first, the logical dims last
    return t


def check_values(name: str, t: torch.Tensor, ok: Callable[[torch.Tensor], torch.Tensor], expected: str) -> None:
    """Checks ``ok(t)`` (a bool tensor of t's shape) holds everywhere.

    Eager CPU tensors: ``ValueError("{name} must be {expected}; {name}[i] = v")``.  CUDA tensors
    and compiled graphs: a device-side assert (``RuntimeError`` with the same message), never a
    host synchronisation and never a silent pass."""
    if t.numel() == 0:
        return
    if t.device.type == "cpu" and not torch.compiler.is_compiling():
        t = unwrap_functorch(t).detach()
        good = ok(t)
        if not bool(good.all()):
            idx = tuple(int(i) for i in (~good).nonzero()[0])
            where = idx[0] if len(idx) == 1 else idx
            raise ValueError(f"{name} must be {expected}; {name}[{where}] = {t[idx].item()!r}")
        return
    torch._assert_async(ok(t).all(), f"kexue: {name} must be {expected}")


def finite(t: torch.Tensor) -> torch.Tensor:
    return torch.isfinite(t)


def positive_finite(t: torch.Tensor) -> torch.Tensor:
    return (t > 0) & torch.isfinite(t)


def nonnegative_finite(t: torch.Tensor) -> torch.Tensor:
    return (t >= 0) & torch.isfinite(t)


def check_tensor(name: str, t: object, *, ndim: int | None = None, floating: bool = False) -> torch.Tensor:
    """``t`` is a tensor (of ``ndim`` dims; of a floating dtype)."""
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must have {ndim} dims, got shape {tuple(t.shape)}")
    if floating and not t.is_floating_point():
        raise TypeError(f"{name} must be a float tensor, got {t.dtype}")
    return t


# ---------------------------------------------------------------------------------------------
# The raw ops' fake (meta) kernels check what their eager kernels check about shapes, ranks and
# dtypes (never values), so a bad call under torch.compile / FakeTensor fails as eager does: a
# RuntimeError from torch._check (eager kernels raise RuntimeError from TORCH_CHECK), message
# "<op>: <argument> ...".

def meta_check(cond: bool, op: str, message: str) -> None:
    """``torch._check(cond)`` with the message ``f"{op}: {message}"`` (the eager kernels' form)."""
    torch._check(cond, lambda: f"{op}: {message}")


def meta_float(op: str, name: str, t: torch.Tensor) -> None:
    meta_check(t.dtype in FLOAT_DTYPES, op, f"{name} must be float16, bfloat16, float32 or float64, got {t.dtype}")


def meta_shape(op: str, name: str, t: torch.Tensor | None, shape: tuple, what: str = "") -> None:
    """``t`` (if given) has exactly ``shape``."""
    if t is not None:
        meta_check(tuple(t.shape) == tuple(shape), op,
                   f"{name} must have shape {what or tuple(shape)}, got {tuple(t.shape)}")


def meta_dtype(op: str, name: str, t: torch.Tensor | None, dtypes: tuple, what: str) -> None:
    if t is not None:
        meta_check(t.dtype in dtypes, op, f"{name} must be {what}, got {t.dtype}")
