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

from ._cli import OneLineParser, fail, resolve_device

HELP_COLUMN = 16  # where the help texts start: past the longest command name


class _OneLineHelp(argparse.HelpFormatter):
    """Help texts never wrap: ``kexue --help`` lists every subcommand on one line."""

    def __init__(self, prog: str) -> None:
        super().__init__(prog)
        self._action_max_length = HELP_COLUMN  # argparse's own floor for the help column

    def _split_lines(self, text: str, width: int) -> list[str]:
        return text.splitlines()


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="kexue", formatter_class=_OneLineHelp,
                           description="kexue: fast, exact kernels behind plain PyTorch APIs.")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")
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
    info = sub.add_parser("info", help="what this kexue was built for, what it runs on, which backends can run")
    info.add_argument("--json", action="store_true", help="print kexue.build_info() as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "info":
        import json

        from ._info import build_info, format_info

        print(json.dumps(build_info(), indent=2) if args.json else format_info(build_info()))
        return 0
    if args.command == "bench":
        from .benchmarking import OPS
        from .benchmarking import main as bench_main

        unknown = [op for op in args.op or () if op not in OPS]
        if unknown:
            return fail("kexue bench", f"--op: unknown op {unknown[0]!r}; known: {', '.join(OPS)}")
        if args.repeats < 1:
            return fail("kexue bench", f"--repeats must be >= 1, got {args.repeats}")
        try:
            device = str(resolve_device(args.device))
        except ValueError as exc:
            return fail("kexue bench", exc)
        bench_main(args.op, device, args.repeats, args.quick)
        return 0
    if args.command == "attribute":
        from .attribution.cli import run as attribute_run

        return attribute_run(args)
    from .probe.cli import run

    return run(args)


if __name__ == "__main__":
    raise SystemExit(main())
