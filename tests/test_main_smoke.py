"""The command users run, end to end at smoke scale: every VLM with both agents, and resume after a kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rls3_jax import checkpoint, main

ROOT = Path(__file__).resolve().parents[1]


def read_metrics(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def comparable(records: list[dict]) -> list[dict]:
    """Everything but wall times: two runs with the same seed must agree on it exactly."""
    return [{k: v for k, v in r.items() if not k.endswith("_s")} for r in records]


@pytest.mark.parametrize("vlm", ["paligemma", "clip", "negclip"])
@pytest.mark.parametrize("agent", ["sac", "random"])
def test_smoke_preset(tmp_path, vlm, agent, capsys):
    out = tmp_path / "run"
    assert main.main(["--vlm", vlm, "--agent", agent, "--preset", "smoke", "--out", str(out)]) == 0
    records = read_metrics(out)
    assert [r["iteration"] for r in records] == [0, 1, 2]
    last = records[-1]
    assert last["generated_samples"] >= 2 * 2 * 8 and last["env_steps"] >= last["generated_samples"]
    assert 0 < last["valid_fraction"] <= 1 and last["mean_extrinsic_reward"] > 0
    assert all(isinstance(x, float) and x == x for r in records[1:] for x in r["train_losses"])
    low, high = (1, 5) if vlm == "paligemma" else (0, 1)
    assert all(low <= r["test_metric"] <= high and low <= r["val_metric"] <= high for r in records)
    # the image-blind baseline: at least chance (CLIP) or the 3 of stating every term (PaliGemma), every record
    floor = 3.0 if vlm == "paligemma" else 1 / 3
    blind = {(r["val_blind_metric"], r["test_blind_metric"]) for r in records}
    assert len(blind) == 1 and all(floor <= x <= high for x in blind.pop())
    assert set(last["test_per_term"]) <= {"above", "below", "behind", "in front", "left", "right"}
    assert any((out / "tensorboard").iterdir()) and checkpoint.metadata_file(out / "checkpoint").is_file()
    printed = capsys.readouterr().out
    assert "test" in printed and str(out) in printed


def _start(out: Path, *extra: str) -> subprocess.Popen:
    argv = [sys.executable, "-m", "rls3_jax.main", "--vlm", "clip", "--preset", "smoke", "--iterations", "3", "--patience", "10",
            "--seed", "3", "--out", str(out), *extra]
    return subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})


def _checkpointed_iterations(out: Path) -> int:
    try:
        return len(json.loads(checkpoint.metadata_file(out / "checkpoint").read_text())["metadata"]["records"]) - 1
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return -1


def test_resume_after_kill_reaches_the_same_metrics(tmp_path):
    full = _start(tmp_path / "full")
    killed_out = tmp_path / "killed"
    killed = _start(killed_out)
    deadline = time.monotonic() + 240
    while _checkpointed_iterations(killed_out) < 1 and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    done_before_kill = _checkpointed_iterations(killed_out)
    assert 1 <= done_before_kill < 3, "the run must be killed part-way"
    resumed = _start(killed_out, "--resume")
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read().decode()
    assert full.wait(timeout=300) == 0, full.stderr.read().decode()
    reference = read_metrics(tmp_path / "full")
    assert [r["iteration"] for r in reference] == [0, 1, 2, 3]
    assert comparable(read_metrics(killed_out)) == comparable(reference)
