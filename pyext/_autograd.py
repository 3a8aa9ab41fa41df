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

Under ``torch.compile`` neither route applies: the kernels stay in the graph (torch.compile has
no double backward of its own).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch


def functorch_active() -> bool:
    """True inside a torch.func transform (grad, vjp, jacrev, jacfwd, hessian, jvp, vmap)."""
    if torch.compiler.is_compiling():
        return False
    return torch._C._functorch.peek_interpreter_stack() is not None


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
