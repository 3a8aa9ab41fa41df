"""kexue.theseus under DistributedDataParallel: 2 gloo processes on the CPU (torchrun).

Both ranks must draw the same modules at every step (the draw is seeded by (seed, step), not by
the global random state), DDP's gradient must be the mean of the per-rank gradients, and the
ranks' parameters must stay identical.  Run with ``find_unused_parameters=False`` (the successor
that sits out gets a zero gradient: ``ddp_keep_in_graph=True``) and with it on (no gradient).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
dist = pytest.importorskip("torch.distributed")

WORKER = Path(__file__).with_name("theseus_ddp_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available() or not dist.is_gloo_available(), reason="no gloo backend")
@pytest.mark.parametrize("mode", ["keep", "find_unused"])
def test_two_ranks_draw_alike_and_all_reduce(tmp_path, mode):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(WORKER), str(tmp_path), mode]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert r0["choices"] == r1["choices"]
    patterns = {tuple(c) for c in r0["choices"]}
    assert len(patterns) > 1 and any(not all(c) for c in patterns)  # mixed steps were exercised
    assert r0["max_grad_error"] < 1e-6 and r1["max_grad_error"] < 1e-6
    assert r0["grad_norm"] == pytest.approx(r1["grad_norm"], rel=1e-6, abs=0)
    assert r0["param_checksum"] == r1["param_checksum"]
    unused = [u for step in r0["unused_grads"] for u in step]
    if mode == "find_unused":  # a successor that sat out keeps grad None, as without DDP
        assert unused and all(unused)
    else:  # keep_in_graph: it took part with a zero gradient, so none went unused
        assert not unused
