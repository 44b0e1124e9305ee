"""Intrinsic pretraining: checkpoints round-trip, the jitted driver is reproducible, and the agent learns."""

import chex
import jax
import numpy as np
import pytest

import sim
from rls3_jax.envs import jax_sim
from rls3_jax.sac import agent as sac
from rls3_jax.sac import buffer as replay
from rls3_jax.sac import pretrain, random_agent
from rls3_jax.sac.config import SACConfig

TINY = SACConfig(hidden_sizes=(32, 32), batch_size=32, buffer_size=400, learning_starts=50)


@pytest.fixture(scope="module")
def env():
    return jax_sim.from_python_env(sim.IndoorSceneEnv("train", max_episode_steps=50), bank_size=64)


def test_checkpoint_round_trip_resumes_identically(tmp_path, env):
    state = sac.init(TINY, 32, 3, seed=0)
    buffer = replay.init(TINY.buffer_size, 32, 3)
    state, carry = pretrain.rollout_start(env, sac.SAC, state, seed=0)
    state, buffer, carry, _, _ = pretrain.rollout(env, sac.SAC, state, buffer, carry, 100)
    pretrain.save(tmp_path / "agent", state, buffer, {"note": "test"})
    loaded_state, loaded_buffer, meta = pretrain.load(tmp_path / "agent")
    assert meta["note"] == "test" and meta["buffer_size"] == 100
    chex.assert_trees_all_equal(loaded_state, state)
    chex.assert_trees_all_equal(loaded_buffer, buffer)
    assert loaded_state.config == TINY
    # training continues from the loaded agent exactly as from the original
    batch = replay.sample(buffer, jax.random.PRNGKey(0), TINY.batch_size)
    chex.assert_trees_all_equal(sac.update(loaded_state, batch), sac.update(state, batch))


def test_random_agent_checkpoint_and_bad_checkpoints(tmp_path):
    state = random_agent.init(TINY, 32, 3, seed=1)
    buffer = replay.init(8, 32, 3)
    pretrain.save(tmp_path / "random", state, buffer)
    loaded, _, meta = pretrain.load(tmp_path / "random")
    assert meta["agent"] == "random" and isinstance(loaded, random_agent.RandomState)
    chex.assert_trees_all_equal(loaded, state)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        pretrain.load(tmp_path / "missing")
    from rls3_jax import checkpoint

    checkpoint.save(tmp_path / "other", {"x": np.zeros(2)})
    with pytest.raises(ValueError, match="not an agent checkpoint"):
        pretrain.load(tmp_path / "other")


def test_jitted_pretraining_is_reproducible(env):
    def run(seed):
        state = sac.init(TINY, 32, 3, seed)
        buffer = replay.init(TINY.buffer_size, 32, 3)
        return pretrain.run_jitted(env, sac.SAC, state, buffer, 200, seed=seed, chunk=100)  # shares one compile

    a, b, c = run(0), run(0), run(1)
    chex.assert_trees_all_equal(a[0], b[0])
    chex.assert_trees_all_equal(a[1], b[1])
    np.testing.assert_array_equal(a[2], b[2])
    assert not np.array_equal(a[1].data.action, c[1].data.action)


def test_pretraining_on_the_simulator_makes_valid_moves_far_more_often_than_the_random_agent():
    """A few thousand steps of jitted intrinsic pretraining (small networks, short episodes so that scenes
    are reset often) against the uniform random agent, same environment, seeds and steps."""
    config = SACConfig(hidden_sizes=(64, 64), batch_size=128, buffer_size=3500, learning_starts=500,
                       learning_rate=1e-3, gamma=0.9, initial_entropy_coef=0.1)
    env = jax_sim.from_python_env(sim.IndoorSceneEnv("train", max_episode_steps=50), bank_size=256)
    fractions = {}
    for name, agent in (("sac", sac.SAC), ("random", random_agent.RANDOM)):
        state = agent.init(config, 32, 3, seed=0)
        buffer = replay.init(config.buffer_size, 32, 3)
        state, _, valid = pretrain.run_jitted(env, agent, state, buffer, 3500, seed=0, chunk=3500)
        fractions[name] = float(valid[2000:].mean())
    assert 0.08 < fractions["random"] < 0.25, fractions
    assert fractions["sac"] > fractions["random"] + 0.1, fractions


def test_loop_pretraining_runs_episodes_through_every_training_scene():
    """The loop pretrains in episodes of T0 valid moves: without truncation the agent's whole pretraining
    would be spent in the one scene (and object set) it was first reset to."""
    from rls3_jax.config import RunConfig, preset
    from rls3_jax.loop.agent_start import pretraining_episodes

    config = RunConfig(preset="smoke", **preset("smoke", "paligemma"))
    episodes = pretraining_episodes(config)
    assert episodes == {"valid_per_episode": config.t0, "max_episode_steps": 50 * config.t0}
    env = jax_sim.from_python_env(sim.IndoorSceneEnv("train", **episodes), bank_size=256, seed=0)
    key, step, reset = jax.random.PRNGKey(0), jax.jit(env.step), jax.jit(env.reset)  # eager ops: a minute
    state, _ = reset(key)
    scenes, valid_in_episode, rng = {int(state.scene)}, 0, np.random.default_rng(0)
    for t in range(600):
        state, _, _, _, truncated, valid = step(state, rng.uniform(-1, 1, 3).astype(np.float32),
                                                jax.random.fold_in(key, t))
        valid_in_episode += int(valid)
        if bool(truncated):
            assert valid_in_episode == config.t0 or int(state.steps) == 50 * config.t0
            state, _ = reset(jax.random.fold_in(key, 10_000 + t))
            scenes.add(int(state.scene))
            valid_in_episode = 0
    assert len(scenes) >= 3  # of the five training scenes (one without truncation)


def test_an_agent_pretrained_for_another_action_or_observation_is_refused():
    from rls3_jax.config import RunConfig
    from rls3_jax.loop.agent_start import _check_interface
    from rls3_jax.loop.components import RunError

    config = RunConfig(vlm="weakspot", agent_from="agent", action="surface", observation="slots")
    _check_interface(config, {"move": "surface", "observation": "slots"})
    with pytest.raises(RunError, match="--action displacement, the run uses surface"):
        _check_interface(config, {})  # saved before the options existed: the paper's
    with pytest.raises(RunError, match="--observation selected-first, the run uses slots"):
        _check_interface(config, {"move": "surface", "observation": "selected-first"})


@pytest.mark.parametrize("kept", ["keep", "drop"])
def test_the_loop_keeps_or_drops_the_pretraining_buffer(kept):
    from rls3_jax.config import RunConfig, preset
    from rls3_jax.loop.agent_start import initial_agent, sac_config
    from rls3_jax.loop.components import agent_functions

    values = {**preset("smoke", "weakspot"), "pretrain_steps": 300, "pretraining_buffer": kept}
    config = RunConfig(vlm="weakspot", preset="smoke", **values)
    obs_dim = sim.IndoorSceneEnv("train").observation_space.shape[0]
    state, buffer, valid = initial_agent(config, agent_functions(config), obs_dim, 3, 64)
    assert int(state.env_steps) == 300 and valid is not None  # pretrained either way
    assert int(buffer.size) == (300 if kept == "keep" else 0)
    assert buffer.capacity == sac_config(config).buffer_size


def test_the_agent_learning_rate_and_gradient_steps_reach_pretraining_and_a_loaded_agent(tmp_path):
    from rls3_jax.config import RunConfig, preset
    from rls3_jax.loop.agent_start import initial_agent
    from rls3_jax.loop.components import agent_functions

    values = {**preset("smoke", "weakspot"), "pretrain_steps": 200, "agent_learning_rate": 5e-4,
              "agent_gradient_steps": 1, "agent_target_entropy": -3.0, "action": "displacement", "observation": "slots"}
    config = RunConfig(vlm="weakspot", preset="smoke", **values)
    obs_dim = sim.IndoorSceneEnv("train").observation_space.shape[0]
    state, buffer, _ = initial_agent(config, agent_functions(config), obs_dim, 3, 64)
    assert state.config.learning_rate == 5e-4
    pretrain.save(tmp_path / "agent", state, buffer, {"pretraining": {"move": "displacement"}})
    loaded = config.replace(agent_from=str(tmp_path / "agent"), agent_learning_rate=2e-3, agent_gradient_steps=2,
                            agent_target_entropy=-1.5)
    state, _, _ = initial_agent(loaded, agent_functions(loaded), obs_dim, 3, 64)
    assert (state.config.learning_rate, state.config.gradient_steps, state.config.target_entropy) == (2e-3, 2, -1.5)
    state, _, _ = initial_agent(loaded.replace(agent_learning_rate=0.0, agent_gradient_steps=0),
                                agent_functions(loaded), obs_dim, 3, 64)
    assert (state.config.learning_rate, state.config.gradient_steps) == (5e-4, 1)  # 0 keeps the saved agent's
