"""Command line.

* ``python -m kexue bench [--op OP] [--device DEV] [--repeats N] [--quick]``: every op side by
  side with its reference on the current device.
* ``python -m kexue probe "SENTENCE" [--model PATH] [--plot out.png] ...``: the dependency tree
  that perturbed masking reads out of an encoder (``--help`` lists the options).
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kexue")
    sub = parser.add_subparsers(dest="command", required=True)
    bench = sub.add_parser("bench", help="every op side by side with its reference on the current device")
    bench.add_argument("--op", action="append", help="only this op (repeatable)")
    bench.add_argument("--device", help="cpu or cuda (default: cuda when available)")
    bench.add_argument("--repeats", type=int, default=7, help="timed runs per provider (median reported)")
    bench.add_argument("--quick", action="store_true", help="small shapes only (smoke test)")
    probe = sub.add_parser("probe", help="dependency tree of a sentence by perturbed masking (Wu et al. 2020)")
    from .probe.cli import add_arguments

    add_arguments(probe)
    attribute = sub.add_parser("attribute", help="integrated gradients of a model's output over a text's tokens")
    from .attribution.cli import add_arguments as add_attribute_arguments

    add_attribute_arguments(attribute)
    args = parser.parse_args(argv)
    if args.command == "bench":
        from .benchmarking import main as bench_main

        bench_main(args.op, args.device, args.repeats, args.quick)
        return 0
    if args.command == "attribute":
        from .attribution.cli import run as attribute_run

        return attribute_run(args)
    from .probe.cli import run

    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
