"""The learners on a mesh of 8 (host-platform) devices give what one device gives.

The checks run in a subprocess started with XLA_FLAGS=--xla_force_host_platform_device_count=8 (the device
count is fixed when JAX starts; the rest of the test session keeps one device) and print one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rls3_jax import sharding

ROOT = Path(__file__).resolve().parent.parent
# The meshes tests/sharding_worker.py trains each model on (CLIP: both axes at once; PaliGemma also data=8 alone).
MESHES = {"paligemma": ("data=8,fsdp=1", "data=2,fsdp=4"), "clip": ("data=2,fsdp=4",)}
STEPS = 3


def test_parse_mesh():
    assert sharding.parse_mesh(None, 8) == (8, 1)
    assert sharding.parse_mesh("data=2,fsdp=4", 8) == (2, 4)
    assert sharding.parse_mesh("fsdp=4", 8) == (2, 4)
    assert sharding.parse_mesh("data=-1,fsdp=2", 8) == (4, 2)
    for bad in ("data=3,fsdp=2", "model=8", "data=-1,fsdp=-1", "data=2;fsdp=4"):
        with pytest.raises(ValueError, match="--mesh"):
            sharding.parse_mesh(bad, 8)


def test_a_mesh_that_does_not_fit_stops_before_the_run_directory_is_touched(tmp_path, capsys):
    from rls3_jax.main import main

    out = tmp_path / "run"
    assert main(["--preset", "smoke", "--mesh", "data=2,fsdp=2", "--out", str(out)]) == 2
    assert "--mesh 'data=2,fsdp=2': data x fsdp = 2 x 2 must equal the 1 devices" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(ROOT)}
    out = tmp_path_factory.mktemp("sharding")
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "sharding_worker.py"), str(out)], env=env,
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("model", ["paligemma", "clip"])
def test_train_steps_match_one_device(report, model):
    ref = report[model]["one_device"]
    assert len(ref["losses"]) == STEPS and all(np.isfinite(ref["losses"]))
    assert ref["moved"] > 1e-4  # the steps really train
    for mesh in MESHES[model]:
        got = report[model][mesh]
        np.testing.assert_allclose(got["losses"], ref["losses"], rtol=2e-5, atol=2e-5, err_msg=f"{model} {mesh}")
        # Adam divides by sqrt(v): parameters whose gradient is ~0 amplify fp32 reduction-order noise, so the
        # bound is relative to how far the parameters moved (one device: 0.6% for PaliGemma, 0.3% for CLIP).
        assert got["max_param_diff"] < 0.02 * ref["moved"], f"{model} {mesh}: parameters differ by {got['max_param_diff']}"


@pytest.mark.parametrize("model", ["paligemma", "clip"])
def test_parameters_and_optimiser_state_are_sharded(report, model):
    info = report[model]["layout"]  # on data=2,fsdp=4
    assert info["devices"] == 8
    big = info["largest"]
    axis = big["spec"].index("fsdp")
    assert big["local_shape"][axis] * 4 == big["shape"][axis]
    assert [s for i, s in enumerate(big["local_shape"]) if i != axis] == [
        s for i, s in enumerate(big["shape"]) if i != axis]
    assert info["opt_sharded_like_params"]
    assert info["replicated_small"]  # small arrays (norm scales, biases) stay whole on every device
    assert info["sharded_fraction"] > 0.5  # most of the parameter bytes are split
    # each device holds the replicated arrays whole and a quarter of every sharded one
    assert info["per_device_bytes"] == info["split_bytes"] < 0.6 * info["total_bytes"]


def test_evaluate_on_mesh_matches_one_device(report):
    for model in ("paligemma", "clip"):
        ev, ref = report[model]["evaluate"], report[model]["evaluate_one_device"]
        np.testing.assert_allclose(ev["loss"], ref["loss"], rtol=1e-5)
        np.testing.assert_allclose(ev["per_sample_metric"], ref["per_sample_metric"])
    assert report["paligemma"]["evaluate"]["answers"] == report["paligemma"]["evaluate_one_device"]["answers"]


def test_sharded_checkpoint_round_trips(report):
    ck = report["checkpoint"]
    assert ck["same_values"] and ck["same_mesh_shardings"]
    assert ck["other_mesh_values"] and ck["other_mesh_shardings"]
