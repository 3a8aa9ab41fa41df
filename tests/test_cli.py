"""`python -m kexue bench` runs end to end (small shapes) and prints its table."""

import argparse
import os
import re
import subprocess
import sys


def test_bench_quick_prints_table():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # as a user runs it
    res = subprocess.run([sys.executable, "-m", "kexue", "bench", "--quick", "--repeats", "1", "--device", "cpu"],
                         capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stderr
    assert "median ms" in res.stdout and "linear_attention/causal" in res.stdout
    assert "torch" in res.stdout and "cross_entropy" in res.stdout
    assert " triton " not in res.stdout  # no interpreter timings
    # the profiler's chatter (memory figures) is filtered out; a line per case shows progress
    assert "USDT" not in res.stdout + res.stderr
    assert "Loading weights" not in res.stdout + res.stderr  # Hugging Face's bar per loaded model
    assert "Memory block of unknown size" not in res.stdout + res.stderr
    assert "[1/" in res.stderr and "timed runs each" in res.stderr


def test_help_lists_every_subcommand_on_one_line():
    from kexue.__main__ import build_parser

    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    helps = {a.dest: a.help for a in sub._choices_actions}
    assert set(helps) == set(sub.choices) and all(helps.values())  # every subcommand has a help line
    env = {**os.environ, "COLUMNS": "40"}  # a narrow terminal: still one line each
    res = subprocess.run([sys.executable, "-m", "kexue", "--help"], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    for name, text in helps.items():
        assert re.search(rf"^\s+{re.escape(name)}\s+{re.escape(text)}$", res.stdout, re.MULTILINE), (name, res.stdout)


def test_native_stderr_filter_drops_only_the_profiler_lines(capfd):
    import torch

    from kexue.benchmarking import peak_memory

    peak = peak_memory(lambda: torch.ones(256, 1024), torch.device("cpu"))
    assert peak == 256 * 1024 * 4  # the figure is kept
    assert "USDT" not in capfd.readouterr().err

    from kexue.benchmarking import PROFILER_NOISE, _native_stderr_without

    with _native_stderr_without(PROFILER_NOISE):
        os.write(2, b"USDT: profiler_start\nreal warning\n")
    err = capfd.readouterr().err
    assert "USDT" not in err and "real warning" in err

    # the memory profiler's warning when the call frees a block allocated before the profile started
    before = torch.ones(1 << 20)
    holder = [before]
    del before
    assert peak_memory(lambda: holder.clear(), torch.device("cpu")) == 0
    err = capfd.readouterr().err
    assert "Memory block of unknown size" not in err, err


def test_bench_providers_take_turns():
    """`kexue bench` times a case's providers in turns (after their warm-up calls), so a change of
    load hits them alike, and reports each one's median against the reference."""
    import torch

    from kexue.benchmarking import BenchCase, run_case

    calls: list[str] = []

    def provider(name):
        return lambda: (lambda: calls.append(name))

    case = BenchCase("op", "shape", "fwd", {"torch": provider("torch"), "kexue": provider("kexue")})
    rows = run_case(case, torch.device("cpu"), repeats=3)
    timed = calls[4:10]  # after 2 warm-up calls each; then one call each for the memory figure
    assert timed == ["torch", "kexue"] * 3, calls
    assert [r.provider for r in rows] == ["torch", "kexue"] and rows[0].ratio == 1.0
