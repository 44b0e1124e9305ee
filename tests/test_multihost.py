"""Two processes joined by jax.distributed on loopback run the loop as one process does.

What must agree: with the random agent every episode's actions and scenes follow from (seed, iteration,
episode), so two processes that each generate half of the episodes produce the same global fine-tuning
batch as one process generating all of them; the VLM (one program over the global mesh of 2 CPU devices,
one per process) then reaches the same losses and metrics as one process driving 2 CPU devices. (With SAC
the agents differ: each process trains its own agent on its own episodes.) Only process 0 writes files.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent.parent
ARGS = ["--vlm", "paligemma", "--agent", "random", "--preset", "smoke", "--iterations", "1", "--episodes", "3",
        "--pretrain-steps", "0", "--vlm-steps", "2", "--eval-every", "1"]
COMPARED = ("generated_samples", "env_steps", "valid_fraction", "val_metric", "val_history", "test_metric",
            "test_per_term", "test_per_complexity")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(devices: int) -> dict:
    return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(ROOT),
            "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def test_two_processes_match_one(tmp_path):
    command = [sys.executable, "-m", "rls3_jax.main", *ARGS]
    port = _free_port()
    two = tmp_path / "two"
    procs = [subprocess.Popen([*command, "--out", str(two), "--coordinator", f"127.0.0.1:{port}",
                               "--num-processes", "2", "--process-id", str(k)], env=_env(1), cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for k in range(2)]
    one = tmp_path / "one"
    try:
        single = subprocess.run([*command, "--out", str(one)], env=_env(2), cwd=ROOT, capture_output=True,
                                text=True, timeout=240)
        outputs = [p.communicate(timeout=240) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert single.returncode == 0, single.stderr[-2000:]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-2000:]
    assert "test mean rubric score" in outputs[0][0] and "rubric" not in outputs[1][0]  # process 0 alone reports

    expected, got = _records(one), _records(two)
    assert len(got) == len(expected) == 2
    for e, g in zip(expected, got):
        for key in COMPARED:
            assert g[key] == e[key], (e["iteration"], key, g[key], e[key])
        np.testing.assert_allclose(g["train_losses"], e["train_losses"], rtol=1e-5)
        np.testing.assert_allclose(g["mean_extrinsic_reward"], e["mean_extrinsic_reward"], rtol=1e-6)
    assert got[1]["train_losses"] and got[1]["generated_samples"] > 0

    # Files: process 0's metrics and TensorBoard; one orbax checkpoint of the last iteration that holds the VLM
    # state and both processes' agents (each process wrote its own part), as a one-process run's does.
    assert len(list((two / "tensorboard").iterdir())) == 1
    from rls3_jax import checkpoint

    tree, meta = checkpoint.load(two / "checkpoint")
    assert len(meta["records"]) == 2 and sorted(p.name for p in two.iterdir() if "checkpoint" in p.name) == ["checkpoint"]
    assert {len(x) for x in jax.tree.leaves(tree["agents"])} == {2}  # a leading axis: one agent per process
    assert {len(x) for x in jax.tree.leaves(checkpoint.load(one / "checkpoint")[0]["agents"])} == {1}


def test_incomplete_process_flags_are_refused(monkeypatch):
    from rls3_jax import distributed

    for name in ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"):
        monkeypatch.delenv(name, raising=False)
    distributed.initialize()  # nothing given: a single-process run, nothing to join
    with pytest.raises(ValueError, match="go together"):
        distributed.initialize("127.0.0.1:1234", 2, None)
    with pytest.raises(ValueError, match="--process-id 2 is not in 0..1"):
        distributed.initialize("127.0.0.1:1234", 2, 2)
    monkeypatch.setenv("JAX_NUM_PROCESSES", "two")
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES='two'"):
        distributed.initialize("127.0.0.1:1234", None, 0)
