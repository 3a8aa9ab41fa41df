"""Command line.

* ``python -m kexue bench [--op OP] [--device DEV] [--repeats N] [--quick]``: every op side by
  side with its reference on the current device.
* ``python -m kexue probe "SENTENCE" [--model PATH] [--plot out.png] ...``: the dependency tree
  that perturbed masking reads out of an encoder (``--help`` lists the options).
* ``python -m kexue info [--json]``: what this kexue was built for (torch, CUDA, GPU
  architectures, compiler), what it runs on, and which backends can run.
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
    info = sub.add_parser("info", help="what this kexue was built for, what it runs on, which backends can run")
    info.add_argument("--json", action="store_true", help="print kexue.build_info() as JSON")
    args = parser.parse_args(argv)
    if args.command == "info":
        import json

        from ._info import build_info, format_info

        print(json.dumps(build_info(), indent=2) if args.json else format_info(build_info()))
        return 0
    if args.command == "bench":
        from .benchmarking import main as bench_main

        bench_main(args.op, args.device, args.repeats, args.quick)
        return 0
    from .probe.cli import run

    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
