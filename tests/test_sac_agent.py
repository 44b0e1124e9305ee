"""The SAC agent learns, is reproducible and rejects malformed batches."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rls3_jax import config as run_config
from rls3_jax.sac import agent as sac
from rls3_jax.sac import agents, random_agent
from rls3_jax.sac import buffer as replay
from rls3_jax.sac.config import SACConfig

SMALL = SACConfig(hidden_sizes=(32, 32), batch_size=32, buffer_size=512, learning_starts=50)


def _batch(key, n=32, obs_dim=6, act_dim=2):
    k1, k2, k3, k4 = jax.random.split(key, 4)
    return replay.Transition(
        obs=jax.random.normal(k1, (n, obs_dim)),
        action=jax.random.uniform(k2, (n, act_dim), minval=-1, maxval=1),
        reward=jax.random.normal(k3, (n,)),
        next_obs=jax.random.normal(k4, (n, obs_dim)),
        done=jnp.ones((n,)),  # terminal: the TD target is the reward, a fixed regression target
    )


def test_critic_loss_falls_on_a_fixed_batch():
    state = sac.init(SMALL, 6, 2, seed=0)
    batch = _batch(jax.random.PRNGKey(1))
    _, first = sac.update(state, batch)
    for _ in range(300):
        state, metrics = sac.update(state, batch)
    assert float(metrics["critic_loss"]) < 0.1 * float(first["critic_loss"])
    assert int(state.updates) == 300


def test_targets_follow_by_polyak_averaging():
    state = sac.init(SMALL, 6, 2, seed=0)
    new, _ = sac.update(state, _batch(jax.random.PRNGKey(0)))
    expected = jax.tree_util.tree_map(lambda t, p: 0.995 * t + 0.005 * p, state.target_critic_params,
                                      new.critic_params)
    chex.assert_trees_all_close(new.target_critic_params, expected, atol=1e-6)
    assert not np.allclose(new.critic_params["params"]["VmapQNetwork_0"]["Dense_0"]["kernel"],
                           state.critic_params["params"]["VmapQNetwork_0"]["Dense_0"]["kernel"])


def test_entropy_coefficient_moves_towards_the_target():
    # A broad policy (entropy above -|A|) must lower alpha; a near-deterministic one must raise it.
    state = sac.init(SMALL, 6, 2, seed=0)
    batch = _batch(jax.random.PRNGKey(2))
    broad, m = sac.update(state, batch)
    assert float(m["entropy"]) > -2.0 and float(broad.log_alpha) < 0.0
    params = jax.tree_util.tree_map(lambda x: x, state.actor_params)
    head = params["params"]["Dense_1"]  # the log-std head
    params["params"]["Dense_1"] = {"kernel": jnp.zeros_like(head["kernel"]), "bias": jnp.full_like(head["bias"], -5.0)}
    narrow, m = sac.update(state.replace(actor_params=params), batch)
    assert float(m["entropy"]) < -2.0 and float(narrow.log_alpha) > 0.0


def _drive(agent, config, seed, steps=120, obs_dim=6, act_dim=2):
    """A fixed dynamics: reward = -|action - 0.5|, next obs rotates."""
    state = agent.init(config, obs_dim, act_dim, seed)
    buffer = replay.init(config.buffer_size, obs_dim, act_dim)
    obs = np.linspace(-1, 1, obs_dim, dtype=np.float32)
    action, state = agent.act(state, obs)
    for _ in range(steps):
        a = np.asarray(action)
        next_obs = np.roll(obs, 1)
        transition = replay.make_transition(obs, a, -np.abs(a - 0.5).sum(), next_obs, 0.0)
        action, state, buffer, _, _ = agent.step(state, buffer, transition, next_obs)
        obs = next_obs
    return state, buffer


def test_same_seed_gives_identical_parameters_and_another_seed_does_not():
    a, buf_a = _drive(sac.SAC, SMALL, seed=3)
    b, buf_b = _drive(sac.SAC, SMALL, seed=3)
    c, _ = _drive(sac.SAC, SMALL, seed=4)
    assert int(a.updates) == 70
    chex.assert_trees_all_equal(a, b)
    chex.assert_trees_all_equal(buf_a, buf_b)
    leaves_a, leaves_c = jax.tree_util.tree_leaves(a.actor_params), jax.tree_util.tree_leaves(c.actor_params)
    assert any(not np.array_equal(x, y) for x, y in zip(leaves_a, leaves_c))


def test_separate_and_fused_steps_agree():
    fused, fused_buffer = _drive(sac.SAC, SMALL, seed=1, steps=60)

    state = sac.init(SMALL, 6, 2, 1)
    buffer = replay.init(SMALL.buffer_size, 6, 2)
    obs = np.linspace(-1, 1, 6, dtype=np.float32)
    action, state = sac.act(state, obs)
    for _ in range(60):
        a = np.asarray(action)
        next_obs = np.roll(obs, 1)
        buffer, _ = replay.add(buffer, replay.make_transition(obs, a, -np.abs(a - 0.5).sum(), next_obs, 0.0))
        state, metrics = sac.train_step(state, buffer)
        action, state = sac.act(state, next_obs)
        obs = next_obs
    assert bool(metrics["trained"]) and int(state.updates) == 10 and int(state.env_steps) == 60
    chex.assert_trees_all_close(state, fused, atol=1e-6)
    chex.assert_trees_all_equal(buffer, fused_buffer)


def test_actions_are_uniform_before_learning_starts_and_squashed_after():
    state = sac.init(SMALL, 6, 2, seed=0)
    obs = jnp.zeros((4000, 6))
    random_actions, state = sac.act(state, obs)
    # uniform on [-1, 1]: mean 0, variance 1/3 (the untrained tanh-Gaussian policy would differ)
    assert abs(float(random_actions.mean())) < 0.03 and abs(float(random_actions.var()) - 1 / 3) < 0.02
    policy_actions, _ = sac.act(state.replace(env_steps=jnp.asarray(SMALL.learning_starts, jnp.int32)), obs)
    assert abs(float(policy_actions.var()) - 1 / 3) > 0.03
    greedy, _ = sac.act(state, obs, deterministic=True)
    assert np.all(np.abs(np.asarray(greedy)) <= 1.0) and np.allclose(greedy, greedy[0])


def test_random_agent_has_the_interface_and_learns_nothing():
    state, buffer = _drive(random_agent.RANDOM, SMALL, seed=0, steps=30)
    assert int(state.env_steps) == 30 and int(state.updates) == 0 and int(buffer.size) == 30
    actions = np.asarray(buffer.data.action[:30])
    assert np.all(np.abs(actions) <= 1.0) and actions.std() > 0.3


def test_every_agent_flag_names_a_bundle_and_unknown_names_are_rejected():
    assert set(agents.AGENTS) == set(run_config.AGENTS)  # every --agent value has a bundle
    assert agents.get("sac") is sac.SAC and agents.get("random") is random_agent.RANDOM
    assert sac.SAC.step is sac.step and random_agent.RANDOM.act is random_agent.act
    assert {sac.SAC: 1}[agents.get("sac")] == 1  # hashable: jitted drivers take it as a static argument
    with pytest.raises(ValueError, match="unknown agent 'ppo'"):
        agents.get("ppo")


def test_malformed_batches_and_configs_are_rejected():
    state = sac.init(SMALL, 6, 2, seed=0)
    batch = _batch(jax.random.PRNGKey(0))
    with pytest.raises(AssertionError):  # (B, 1) rewards would broadcast the TD target to (B, B)
        sac.update(state, batch._replace(reward=batch.reward[:, None]))
    with pytest.raises(AssertionError):
        sac.act(state, jnp.zeros((5,)))
    with pytest.raises(ValueError, match="tau"):
        SACConfig(tau=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        SACConfig(batch_size=512, buffer_size=256)
