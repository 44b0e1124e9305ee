"""The Unity adapter end to end through ML-Agents' real UnityEnvironment, against the fake Unity player (a separate
process speaking the gRPC protocol with mlagents_envs' generated messages), compared with sim.IndoorSceneEnv."""

import errno
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("mlagents_envs")

from rls3_jax.config import RunConfig  # noqa: E402
from rls3_jax.envs import make_env  # noqa: E402
from rls3_jax.envs.unity import UnityEnv, UnityEnvError, UnityIndoorSceneEnv  # noqa: E402
from sim import IndoorSceneEnv  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SIZE = 32  # small images keep the suite fast; the protocol does not care


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.fixture
def players():
    """Start fake Unity players as separate processes; all are killed at the end of the test."""
    started = []

    def start(port, *args):
        env = dict(os.environ, PYTHONPATH=str(REPO))
        cmd = [
            sys.executable,
            "-m",
            "rls3_jax.envs.fake_unity_player",
            "--port",
            str(port),
            "--connect-timeout",
            "30",
        ]
        p = subprocess.Popen(
            [*cmd, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        started.append(p)
        return p

    yield start
    for p in started:
        if p.poll() is None:
            p.kill()
        p.wait(10)


def assert_same_step(got, want, k):
    obs, reward, terminated, truncated, info = got
    assert obs.dtype == np.float32 and obs.shape == (32,)
    np.testing.assert_array_equal(obs, want[0], err_msg=f"step {k}")
    assert (reward, terminated, truncated) == tuple(want[1:4]), f"step {k}"
    assert info == want[4], f"step {k}"


def test_unity_matches_the_simulator_through_the_real_client(players):
    port = free_port()
    player = players(port, "--split", "val")  # the run's split must override the player's default
    env = UnityIndoorSceneEnv(split="train", image_size=SIZE, port=port, timeout_s=20, valid_per_episode=15)
    ref = IndoorSceneEnv(split="train", image_size=SIZE, render_mode="rgb_array", valid_per_episode=15)
    try:
        assert env.observation_space == ref.observation_space and env.action_space == ref.action_space
        obs, info = env.reset(seed=1234)
        obs_ref, info_ref = ref.reset(seed=1234)
        np.testing.assert_array_equal(obs, obs_ref)
        assert info == info_ref and info["metadata"]["split"] == "train"
        np.testing.assert_array_equal(env.render(), ref.render())
        rng = np.random.default_rng(7)
        boundaries = valid = 0
        for k in range(300):
            action = rng.uniform(-1, 1, 3).astype(np.float32)
            got, want = env.step(action), ref.step(action)
            assert_same_step(got, want, k)
            image = env.render()
            assert image.dtype == np.uint8 and image.shape == (SIZE, SIZE, 3)
            np.testing.assert_array_equal(image, ref.render(), err_msg=f"image at step {k}")
            valid += got[4]["valid"]
            if got[3]:  # episode boundary: the next episode continues the seeded stream
                boundaries += 1
                obs, info = env.reset()
                obs_ref, info_ref = ref.reset()
                np.testing.assert_array_equal(obs, obs_ref)
                assert info == info_ref
        assert boundaries >= 2 and 0 < valid < 300  # both rewards and several episode ends were exercised
        # A scene chosen through reset options, and a reseed, reach Unity too.
        obs, info = env.reset(seed=99, options={"scene": 2})
        obs_ref, info_ref = ref.reset(seed=99, options={"scene": 2})
        np.testing.assert_array_equal(obs, obs_ref)
        assert info == info_ref
        action = np.array([0.3, -0.2, 0.1], np.float32)
        assert_same_step(env.step(action), ref.step(action), "after reseed")
    finally:
        env.close_connection()
    out, err = player.communicate(timeout=10)
    assert player.returncode == 0, err
    assert "served 301 steps" in out


def test_raw_images_and_max_episode_steps(players):
    port = free_port()
    players(port, "--raw-images")
    config = RunConfig(env="unity", unity_port=port, unity_timeout_s=20)
    env = make_env(config, "test", (24, 40), max_episode_steps=5)
    ref = IndoorSceneEnv(split="test", image_size=(24, 40), render_mode="rgb_array", max_episode_steps=5)
    try:
        env.reset(seed=5)
        ref.reset(seed=5)
        rng = np.random.default_rng(1)
        for k in range(5):
            action = rng.uniform(-1, 1, 3).astype(np.float32)
            assert_same_step(env.step(action), ref.step(action), k)
            np.testing.assert_array_equal(env.render(), ref.render())
        with pytest.raises(RuntimeError, match="reset"):  # truncated: the episode is over
            env.step(np.zeros(3, np.float32))
    finally:
        env.close_connection()


def test_environments_in_turn_share_one_connection(players):
    port = free_port()
    player = players(port)
    val = UnityEnv(port=port, split="val", image_size=SIZE, timeout_s=20)
    try:
        assert val.reset(seed=1)[1]["metadata"]["split"] == "val"
        val.step(np.zeros(3, np.float32))
        val.close()  # the loop closes its fixed-set environment, then opens the training one
        train = UnityEnv(port=port, split="train", image_size=SIZE, timeout_s=20)
        ref = IndoorSceneEnv(split="train", image_size=SIZE, render_mode="rgb_array")
        obs, info = train.reset(seed=2)
        obs_ref, info_ref = ref.reset(seed=2)
        np.testing.assert_array_equal(obs, obs_ref)
        assert info == info_ref
        np.testing.assert_array_equal(train.render(), ref.render())
        action = np.array([0.1, 0.2, 0.3], np.float32)
        assert_same_step(train.step(action), ref.step(action), 0)
        with pytest.raises(UnityEnvError, match="closed"):
            val.reset()
        # The camera keeps the connection's first size; another size is resized here, with a warning.
        small = UnityEnv(port=port, split="test", image_size=16, timeout_s=20)
        with pytest.warns(UserWarning, match=r"camera images are \(32, 32\), resizing to \(16, 16\)"):
            small.reset(seed=3)
        assert small.render().shape == (16, 16, 3)
        with pytest.raises(RuntimeError, match="another environment"):
            train.step(action)  # Unity now plays `small`'s episode
    finally:
        val.close_connection()
    out, err = player.communicate(timeout=10)
    assert player.returncode == 0 and "served 2 steps" in out, err


def test_bad_actions_are_rejected_before_reaching_unity(players):
    port = free_port()
    players(port)
    env = UnityIndoorSceneEnv(image_size=SIZE, port=port, timeout_s=20)
    try:
        env.reset(seed=0)
        with pytest.raises(ValueError, match="shape"):
            env.step(np.zeros(2, np.float32))
        with pytest.raises(ValueError, match="non-finite"):
            env.step(np.array([0.0, np.nan, 0.0], np.float32))
        assert env.step(np.zeros(3, np.float32))[4]["valid"] in (True, False)  # still in sync
    finally:
        env.close_connection()


def test_player_killed_mid_episode_gives_a_clean_error(players):
    port = free_port()
    player = players(port)
    env = UnityIndoorSceneEnv(image_size=SIZE, port=port, timeout_s=20)
    try:
        env.reset(seed=0)
        for _ in range(3):
            env.step(np.zeros(3, np.float32))
        player.send_signal(signal.SIGKILL)
        player.wait(10)
        time.sleep(0.5)  # Unity dies while Python is busy elsewhere (e.g. fine-tuning the VLM)
        start = time.monotonic()
        with pytest.raises(UnityEnvError) as err:
            env.step(np.zeros(3, np.float32))
        # noticed from the dropped connection, well before the 20 s timeout (slack for a loaded CI machine)
        assert time.monotonic() - start < 8
        message = str(err.value)
        assert "\n" not in message and f"port {port}" in message and "step 4 of episode 1" in message
        assert "restart Unity" in message and "checkpoint" in message
        with pytest.raises(UnityEnvError, match="closed"):
            env.reset()
    finally:
        env.close_connection()


def test_hung_player_times_out_within_the_configured_timeout(players):
    port = free_port()
    player = players(port)
    env = UnityIndoorSceneEnv(image_size=SIZE, port=port, timeout_s=2)
    try:
        env.reset(seed=0)
        player.send_signal(signal.SIGSTOP)  # alive but silent: only the timeout can tell
        start = time.monotonic()
        with pytest.raises(UnityEnvError, match=rf"port {port} stopped during step 1 .*no answer within 2 s"):
            env.step(np.zeros(3, np.float32))
        assert 1.5 < time.monotonic() - start < 2 + 4  # the 2 s timeout, not the default 60 s
    finally:
        player.send_signal(signal.SIGCONT)
        env.close_connection()


def test_nobody_connecting_times_out_with_advice():
    port = free_port()
    start = time.monotonic()
    with pytest.raises(
        UnityEnvError, match=rf"port {port}: no Unity player connected within 1 s; press Play"
    ):
        UnityIndoorSceneEnv(port=port, timeout_s=1)
    assert time.monotonic() - start < 1 + 5  # the timeout holds (slack for a loaded CI machine), not the default 60 s
    # the port was released: nothing listens there (binding it could collide with another process's outgoing
    # connection, whose local port is drawn from the same range as free_port's)
    with socket.socket() as s:
        assert s.connect_ex(("localhost", port)) == errno.ECONNREFUSED


def test_port_in_use_is_reported():
    with socket.socket() as busy:
        busy.bind(("localhost", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(UnityEnvError, match=rf"port {port} is in use.*--unity-port"):
            UnityIndoorSceneEnv(port=port, timeout_s=1)


def test_missing_build_is_reported(tmp_path):
    missing = tmp_path / "NoSuchBuild.x86_64"
    with pytest.raises(
        UnityEnvError, match=r"Unity build .*NoSuchBuild.x86_64' not found: pass --unity-build"
    ):
        UnityIndoorSceneEnv(build=str(missing), port=free_port(), timeout_s=1)


def fake_build(folder: Path, body: str) -> Path:
    """A 'Unity build': an executable that receives --mlagents-port like a real player."""
    folder.mkdir()
    exe = folder / "RLS3.x86_64"
    exe.write_text(f"#!/bin/sh\nexport PYTHONPATH={REPO}\n{body}\n")
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def test_launch_mode_starts_the_build_and_closes_it(tmp_path):
    build = fake_build(tmp_path / "Build", f'exec {sys.executable} -m rls3_jax.envs.fake_unity_player "$@"')
    config = RunConfig(env="unity", unity_build=str(build.parent), unity_port=free_port(), unity_timeout_s=20)
    env = make_env(config, "train", SIZE)
    try:
        env.reset(seed=3)
        ref = IndoorSceneEnv(image_size=SIZE, render_mode="rgb_array")
        ref.reset(seed=3)
        action = np.array([0.5, 0.0, -0.5], np.float32)
        assert_same_step(env.step(action), ref.step(action), 0)
        process = env._conn.env._process
    finally:
        env.close_connection()
    assert process.poll() is not None or process.wait(10) == 0


def test_build_that_dies_at_start_is_reported(tmp_path):
    build = fake_build(tmp_path / "Broken", "exit 3")
    start = time.monotonic()
    with pytest.raises(
        UnityEnvError, match=r"Unity build .*Broken.* on port \d+: could not start .*return code 3"
    ):
        UnityIndoorSceneEnv(build=str(build), port=free_port(), timeout_s=30)
    assert time.monotonic() - start < 10  # noticed from the exit, not the 30 s timeout


def test_make_env_rejects_unknown_kinds_and_stray_unity_options():
    with pytest.raises(ValueError, match="unknown environment 'gazebo'"):
        make_env(RunConfig(env="gazebo"))
    with pytest.raises(ValueError, match="--env unity"):
        make_env(RunConfig(env="sim", unity_port=5004))
