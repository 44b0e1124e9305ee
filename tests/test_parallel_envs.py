"""--num-envs N: N simulators feed one agent, N transitions per agent update; episodes keep T0 samples."""

from __future__ import annotations

import numpy as np
import pytest

import sim
from rls3_jax import loop
from rls3_jax.envs import vector
from rls3_jax.sac import buffer as replay
from rls3_jax.sac import random_agent
from rls3_jax.sac.config import SACConfig
from tests.test_loop_mechanics import ScalarLearner, read_metrics, smoke_config


def _vec(n):
    return vector.make_vector_env(
        lambda: sim.IndoorSceneEnv(split="train", image_size=16, render_mode="rgb_array"), n)


def test_vector_episode_stores_every_transition_and_updates_once_per_vector_step():
    n, t0 = 3, 6
    vec = _vec(n)
    state = random_agent.RANDOM.init(SACConfig(buffer_size=4096), 32, 3, seed=0)
    buffer = replay.init(4096, 32, 3)
    timers = {"generation_s": 0.0, "agent_update_s": 0.0}
    state, buffer, images, metadatas, valid_slots, last_slot, moves = vector.run_episode(
        vec, random_agent.RANDOM, state, buffer, t0, 50 * t0, seed=5, timers=timers)
    assert len(images) == len(metadatas) == len(valid_slots) == t0
    assert images[0].shape == (16, 16, 3) and images[0].dtype == np.uint8
    assert moves % n == 0 and int(buffer.size) == moves  # every simulator's every move is stored
    assert int(state.env_steps) == moves // n  # one agent update per vector step
    rewards = np.asarray(buffer.data.reward)
    assert np.all(rewards[valid_slots] == 1.0)  # the slots of valid moves hold the +1 of a valid move
    assert last_slot == moves - 1
    # Reproducible under the episode seed.
    state2 = random_agent.RANDOM.init(SACConfig(buffer_size=4096), 32, 3, seed=0)
    again = vector.run_episode(_vec(n), random_agent.RANDOM, state2, replay.init(4096, 32, 3), t0, 50 * t0, 5,
                                      {"generation_s": 0.0, "agent_update_s": 0.0})
    assert again[3] == metadatas and again[6] == moves


@pytest.mark.parametrize("agent", ["random", "sac"])
def test_loop_runs_with_parallel_simulators(tmp_path, agent):
    records = loop.run(smoke_config(num_envs=3, agent=agent, iterations=1), tmp_path / "r", learner=ScalarLearner())
    assert read_metrics(tmp_path / "r")[-1]["iteration"] == 1
    assert records[1]["env_steps"] % 3 == 0 and records[1]["generated_samples"] >= 2 * 4
