"""Two CPU processes (gloo) train together through torchrun and the CLI; rank 0 writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from napari_tpm.checkpoints import load_model
from napari_tpm.train.runlog import read_log

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_ddp_run_on_phantoms(tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        "-m", "napari_tpm.train", "train", "--phantoms", "2", "--phantom-shape", "10,48,48",
        "--size", "48", "--sv-min-size", "60", "--min-support-px", "25",
        "--encoder", "resnet18-l3", "--steps", "3", "--checkpoint-every", "2",
        "--analysis-episodes", "4", "--device", "cpu", "--threads", "1", "--quiet",
        "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es)" in proc.stderr
    rows = read_log(out / "losses.csv")
    assert [int(r["step"]) for r in rows] == [1, 2, 3]  # one writer, each step once
    card = json.loads((out / "model.json").read_text())
    assert card["card"]["training"]["world_size"] == 2
    model = load_model(out / "model.pt")
    assert model.calibrated and set(model.estimators) == {"sp", "mp"}
    assert (out / "losses.png").is_file()
