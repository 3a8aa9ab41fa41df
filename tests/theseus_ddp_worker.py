"""Worker of tests/test_theseus_ddp.py, run by ``torchrun --nproc_per_node 2`` (gloo, CPU).

Each rank wraps the same tiny BERT (seed 0) and trains it under DistributedDataParallel on its
own batch, with ``find_unused_parameters`` off (``ddp_keep_in_graph=True``) or on.  After each
backward it records the draw and checks, against a plain copy of the model run on both ranks'
batches, that DDP's gradient is the mean of the per-rank gradients.  Writes ``rank<r>.json`` to
the folder given as argv[1].
"""

import copy
import json
import sys

import torch
import torch.distributed as dist
import transformers
from torch.nn.parallel import DistributedDataParallel as DDP

from kexue import theseus

STEPS = 6


def main(out_dir: str, keep_in_graph: bool) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=4, num_attention_heads=2,
                                  intermediate_size=24, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = transformers.BertForSequenceClassification(cfg)
    wrapped = theseus.wrap(model, ratio=2, scheduler=theseus.ConstantReplacing(0.5), seed=11,
                           ddp_keep_in_graph=keep_in_graph)
    plain = copy.deepcopy(wrapped)  # the same model outside DDP: the per-rank gradients
    wrapped.train()
    plain.train()
    ddp = DDP(wrapped, find_unused_parameters=not keep_in_graph)
    opt = torch.optim.SGD(wrapped.trainable_parameters(), lr=0.1)
    plain_opt = torch.optim.SGD(plain.trainable_parameters(), lr=0.1)
    record = {"choices": [], "max_grad_error": 0.0, "grad_norm": [], "unused_grads": []}
    for step in range(STEPS):
        g = torch.Generator().manual_seed(100 * step + rank)  # a different batch on every rank
        inputs = {"input_ids": torch.randint(1, 40, (4, 9), generator=g),
                  "labels": torch.randint(0, 2, (4,), generator=g)}
        ddp(**inputs).loss.backward()
        record["choices"].append(wrapped.last_choices.tolist())
        # the plain copy on every rank's batch: the mean of the local gradients
        local = []
        for r in range(world):
            gr = torch.Generator().manual_seed(100 * step + r)
            batch = {"input_ids": torch.randint(1, 40, (4, 9), generator=gr),
                     "labels": torch.randint(0, 2, (4,), generator=gr)}
            plain.zero_grad(set_to_none=True)
            plain.draw_step = step
            plain(**batch).loss.backward()
            local.append([None if p.grad is None else p.grad.clone() for p in plain.parameters()])
        norm = 0.0
        unused = []
        for i, p in enumerate(wrapped.parameters()):
            if not p.requires_grad:
                assert p.grad is None, "a frozen parameter got a gradient"
                continue
            grads = [loc[i] for loc in local]
            if all(x is None for x in grads):
                if p.grad is not None:
                    assert not p.grad.any(), "a successor that sat out got a non-zero gradient"
                unused.append(p.grad is None)
                continue
            mean = torch.stack([x if x is not None else torch.zeros_like(p) for x in grads]).mean(0)
            record["max_grad_error"] = max(record["max_grad_error"], (p.grad - mean).abs().max().item())
            norm += float(p.grad.pow(2).sum())
        record["grad_norm"].append(norm ** 0.5)
        record["unused_grads"].append(unused)
        opt.step()
        opt.zero_grad(set_to_none=True)
        # keep the plain copy in step with the DDP model
        with torch.no_grad():
            for p, q in zip(plain.parameters(), wrapped.parameters(), strict=True):
                p.copy_(q)
        plain_opt.zero_grad(set_to_none=True)
        wrapped.scheduler.step()
    flat = torch.cat([p.detach().reshape(-1) for p in wrapped.parameters()])
    record["param_checksum"] = float(flat.double().sum())
    with open(f"{out_dir}/rank{rank}.json", "w") as f:
        json.dump(record, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], keep_in_graph=sys.argv[2] == "keep")
