"""Higher-order gradients and torch.func for the kernel-backed ops: the shared rules.

Every op's first-order backward is a fused kernel (a registered op: ``kexue::*_bwd``).  Those
kernels return plain tensors, with no graph of their own, so two situations need another route:

* **Double backward** (``create_graph=True``: gradient penalties, Hessian-vector products, MAML).
  The autograd engine runs a backward with grad mode on exactly when ``create_graph=True``; the
  ops' registered backwards then call :func:`reference_vjp`, which recomputes the op through its
  plain-PyTorch reference (float64-capable, the definition the kernels are tested against) under
  autograd and returns ``torch.autograd.grad(..., create_graph=True)``: a gradient that is itself
  differentiable in the inputs and in the incoming gradient.  A first-order ``backward()`` runs
  with grad mode off and still takes the fused kernel (same speed as before).
* **torch.func transforms.**  ``torch.library.register_autograd`` wraps the backward in an
  ``autograd.Function`` built without a ``setup_context`` staticmethod
  (``torch/_library/autograd.py``, ``make_autograd_impl``), and functorch refuses such a Function
  ("must override the setup_context staticmethod").  The public functions therefore run the
  reference (the "torch" backend, a composite of torch operators that every transform supports:
  grad, jacrev, hessian, vmap, jvp, jacfwd) while a transform is active:
  :func:`functorch_active`.

The raw ops (``torch.ops.kexue.*``) take the same route: :func:`register_functorch_reference`
gives each differentiable op a kernel at functorch's front dispatch key
(``FuncTorchDynamicLayerFrontMode``, reached only while a transform is active) that runs the
op's reference composite, so every transform sees torch operators it knows; ops that cannot be
expressed that way (in-place backward ops) raise an error that names the op and the public
function to use (:func:`refuse_functorch`).  Outside transforms the kernels run unchanged.

Forward-mode AD with dual tensors outside torch.func (``torch.autograd.forward_ad``): a custom
op drops the tangent of a dual input without a word (its registered autograd has no forward
formula and is not entered when nothing requires grad), so inside a dual level the public
functions run as the reference too (:func:`forward_ad_active`; tests/test_forward_ad.py).  The raw
differentiable ops refuse dual inputs with an error naming the op and the argument, from a
kernel at the ADInplaceOrView key that every call passes after autograd: in C++ for the ops
defined in csrc/registration.cpp (no Python on their hot path), and :func:`refuse_forward_ad`
for the Python-defined (Triton) ops, registered with their torch.func route.

Under ``torch.compile`` neither route applies: the kernels stay in the graph (torch.compile has
no double backward of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.autograd.forward_ad as fwAD


def functorch_active() -> bool:
    """True inside a torch.func transform (grad, vjp, jacrev, jacfwd, hessian, jvp, vmap)."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._functorch.peek_interpreter_stack() is not None


def forward_ad_active() -> bool:
    """True inside ``torch.autograd.forward_ad.dual_level()``, where dual tensors may come in.

    The kernels' registered autograd has no forward-mode formula, and a custom op drops the
    tangents of dual inputs without a word, so there every backend runs as the reference (torch
    operators, which carry tangents), as under torch.func."""
    if torch.compiler.is_compiling():
        return False
    return getattr(torch.autograd.forward_ad, "_current_level", -1) >= 0


def needs_differentiable_backward() -> bool:
    """True in a backward that must build a graph (``create_graph=True``), outside torch.compile."""
    return torch.is_grad_enabled() and not torch.compiler.is_compiling()


def reference_vjp(
    fn: Callable[..., Sequence[torch.Tensor]],
    inputs: Sequence[torch.Tensor | None],
    needs: Sequence[bool],
    grad_outputs: Sequence[torch.Tensor | None],
) -> list[torch.Tensor | None]:
    """Σ_j ⟨fn(*inputs)_j, grad_outputs_j⟩ differentiated in each input with ``needs[i]``, with a graph.

    ``fn`` is the op's differentiable reference, returning a sequence of outputs that matches
    ``grad_outputs`` (a None gradient leaves that output out).  Inputs with ``needs[i]`` require
    grad (autograd saved them so); the others enter as constants.  Returns one entry per input:
    its gradient (zeros where the output does not depend on it) or None where not needed.
    Cost: one forward and one backward of the reference, O(its activations) memory."""
    with torch.enable_grad():
        outs = fn(*inputs)
    pairs = [(o, g) for o, g in zip(outs, grad_outputs, strict=True)
             if g is not None and o.requires_grad]
    wanted = [i for i, (t, n) in enumerate(zip(inputs, needs, strict=True)) if n and t is not None]
    result: list[torch.Tensor | None] = [None] * len(inputs)
    if not wanted:
        return result
    if pairs:
        grads = torch.autograd.grad([o for o, _ in pairs], [inputs[i] for i in wanted],
                                    [g.to(o.dtype) for o, g in pairs], create_graph=True, allow_unused=True)
    else:
        grads = (None,) * len(wanted)
    for i, g in zip(wanted, grads, strict=True):
        result[i] = g if g is not None else torch.zeros_like(inputs[i])
    return result


# Kernels at functorch's front key (one Library object, kept alive for the process).
_FUNCTORCH_LIB = torch.library.Library("kexue", "IMPL")
FUNCTORCH_KEY = "FuncTorchDynamicLayerFrontMode"
FUNCTORCH_ROUTED: dict[str, str] = {}  # op name -> "reference" or "refused" (what the tests walk)


def register_functorch_reference(name: str, fn: Callable, *, differentiable: bool = True) -> None:
    """Inside any torch.func transform, ``kexue::<name>`` runs ``fn`` instead of its kernels.

    ``fn`` takes the op's arguments and returns its outputs (same shapes and dtypes) through
    torch operators, so grad, jacrev, hessian, vmap, vmap(grad), jvp and jacfwd all apply to it.
    Costs what the reference costs (the kernels stay the path outside transforms).  A
    ``differentiable`` op also refuses dual tensors outside torch.func (:func:`refuse_forward_ad`)."""
    _FUNCTORCH_LIB.impl(name.split("::")[-1], fn, FUNCTORCH_KEY)
    FUNCTORCH_ROUTED[name.split("::")[-1]] = "reference"
    if differentiable:
        refuse_forward_ad(name)


FORWARD_AD_KEY = "ADInplaceOrView"  # after autograd, before the device kernels: every call passes it


def dual_input_message(op: str, arg: str) -> str:
    """The error for a dual tensor reaching a raw op (the C++ kernel in csrc/registration.cpp says the same)."""
    return (f"{op}: argument '{arg}' is a dual tensor (torch.autograd.forward_ad), and this raw op has no "
            "forward-mode formula, so its tangent would be lost. Call the public kexue function instead (inside a "
            "dual level it runs the reference, which carries tangents), or use torch.func.jvp.")


def refuse_forward_ad(name: str) -> None:
    """``kexue::<name>`` raises on a dual input instead of dropping its tangent, through a kernel at
    the ADInplaceOrView key (the C++-defined ops have theirs in csrc/registration.cpp; this one is
    for the Python-defined ones and is skipped where a kernel is there already)."""
    qualified = "kexue::" + name.split("::")[-1]
    if torch._C._dispatch_has_kernel_for_dispatch_key(qualified, FORWARD_AD_KEY):
        return
    op = getattr(torch.ops.kexue, name.split("::")[-1]).default
    arg_names = [a.name for a in op._schema.arguments]

    def kernel(keyset, *args, **kwargs):
        if fwAD._current_level >= 0:  # a dual level is open: look for tangents
            for arg, value in [*zip(arg_names, args, strict=False), *kwargs.items()]:
                if isinstance(value, torch.Tensor) and fwAD.unpack_dual(value).tangent is not None:
                    raise RuntimeError(dual_input_message(qualified, arg))
        return op.redispatch(keyset & torch._C._after_ADInplaceOrView_keyset, *args, **kwargs)

    _FUNCTORCH_LIB.impl(qualified.split("::")[-1], kernel, FORWARD_AD_KEY, with_keyset=True)


def refuse_functorch(name: str, use: str) -> None:
    """Inside a torch.func transform, ``kexue::<name>`` raises a RuntimeError naming the op and
    what to use instead (for ops with no functional formulation, e.g. in-place backward ops)."""
    op = name.split("::")[-1]

    def refuse(*args, **kwargs):
        raise RuntimeError(f"kexue::{op} cannot run inside a torch.func transform (grad, vmap, jvp, ...): "
                           f"{use}")

    _FUNCTORCH_LIB.impl(op, refuse, FUNCTORCH_KEY)
    FUNCTORCH_ROUTED[op] = "refused"


def functional_vjp(fn: Callable[..., Sequence[torch.Tensor]], primals: Sequence[torch.Tensor | None],
                   cotangents: Sequence[torch.Tensor | None]) -> list[torch.Tensor | None]:
    """The gradients of Σ_j ⟨fn(*primals)_j, cotangents_j⟩ in each non-None primal, through
    ``torch.func.vjp`` (so it composes with enclosing transforms; a None cotangent counts as 0).
    Used by the raw backward ops under torch.func."""
    present = [i for i, t in enumerate(primals) if t is not None]

    def f(*xs):
        full = list(primals)
        for i, x in zip(present, xs, strict=True):
            full[i] = x
        return tuple(fn(*full))

    outs, pull = torch.func.vjp(f, *[primals[i] for i in present])
    cot = tuple(torch.zeros_like(o) if g is None else g.to(o.dtype) for o, g in zip(outs, cotangents, strict=True))
    grads = pull(cot)
    result: list[torch.Tensor | None] = [None] * len(primals)
    for i, g in zip(present, grads, strict=True):
        result[i] = g
    return result
