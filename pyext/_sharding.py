"""Work over many items shared across torchrun ranks (``torch.distributed`` initialised), or run
whole in one process.

Items are dealt largest first, round-robin (``order[rank::world]``), so every rank gets a similar
load; rank 0 gathers the results back into the input order and returns them, the other ranks
return None.  Used by :func:`kexue.probe.impact_matrices` and
:func:`kexue.attribution.token_attributions`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any


def dist_context():
    """(torch.distributed, rank, world) in a process group of more than one rank, else (None, 0, 1)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return dist, dist.get_rank(), dist.get_world_size()
    return None, 0, 1


def run_sharded(sizes: Sequence[int], work: Callable[[list[int]], list[Any]]) -> list[Any] | None:
    """``work(indices)`` on this rank's share of the items (largest ``sizes`` first), gathered on rank 0.

    ``work`` returns one result per index it is given, in that order.  Returns the results of every
    item in input order (rank 0, or a single process), None on the other ranks.
    """
    dist, rank, world = dist_context()
    order = sorted(range(len(sizes)), key=lambda n: -sizes[n])
    mine = order[rank::world]
    local = work(mine) if mine else []
    pairs = list(zip(mine, local, strict=True))
    if dist is not None:
        gathered = [None] * world if rank == 0 else None
        dist.gather_object(pairs, gathered, dst=0)
        if rank != 0:
            return None
        pairs = [p for part in gathered for p in part]
    result: list[Any] = [None] * len(sizes)
    for n, r in pairs:
        result[n] = r
    return result
