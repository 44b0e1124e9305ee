"""The RLS3 loop's smoke preset with `--env unity` against the fake Unity player (a separate process), with the
loop tests' one-scalar stand-in VLM so only the environment path is under test."""

import json

import pytest

pytest.importorskip("mlagents_envs")

from rls3_jax import checkpoint, main  # noqa: E402
from rls3_jax.envs import unity  # noqa: E402
from rls3_jax.loop import components  # noqa: E402
from tests import test_unity_adapter  # noqa: E402
from tests.test_loop_mechanics import ScalarLearner  # noqa: E402

free_port = test_unity_adapter.free_port
players = test_unity_adapter.players  # the fixture that starts (and kills) fake players

SMOKE = [
    "--vlm",
    "clip",
    "--preset",
    "smoke",
    "--iterations",
    "2",
    "--episodes",
    "2",
    "--t0",
    "4",
    "--vlm-steps",
    "2",
]


@pytest.fixture
def scalar_learner(monkeypatch):
    monkeypatch.setattr(components, "make_learner", lambda config: ScalarLearner())
    yield
    unity.close_all()  # the loop leaves the connection open for its next environment


def test_smoke_run_through_unity(tmp_path, players, scalar_learner):
    port = free_port()
    player = players(port)
    out = tmp_path / "run"
    argv = [
        *SMOKE,
        "--pretrain-steps",
        "20",
        "--env",
        "unity",
        "--unity-port",
        str(port),
        "--unity-timeout",
        "20",
    ]
    assert main.main([*argv, "--out", str(out)]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in records] == [0, 1, 2]
    unity.close_all()
    stdout, stderr = player.communicate(timeout=10)
    assert player.returncode == 0, stderr
    served = int(stdout.split("served ")[1].split()[0])
    assert served >= 2 * 2 * 4  # at least every episode's moves (plus the fixed sets)


def test_unity_dying_mid_run_stops_with_one_line_and_a_usable_checkpoint(
    tmp_path, players, scalar_learner, capsys
):
    port = free_port()
    players(port, "--crash-after-steps", "160")  # after the fixed sets and the first iterations
    out = tmp_path / "run"
    argv = [
        *SMOKE,
        "--iterations",
        "50",
        "--pretrain-steps",
        "0",
        "--env",
        "unity",
        "--unity-port",
        str(port),
    ]
    assert main.main([*argv, "--unity-timeout", "3", "--log-level", "warning", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert f"port {port} stopped during step" in err and "resume the run from its last checkpoint" in err
    _, meta = checkpoint.load(out / "checkpoint")
    assert len(meta["records"]) >= 1
