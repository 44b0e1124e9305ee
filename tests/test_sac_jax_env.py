"""The pure-JAX feasibility dynamics agree with the Python simulator on the same states and actions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import sim
from rls3_jax.envs import jax_sim
from sim import geometry


@pytest.fixture(scope="module", params=[("displacement", "slots"), ("surface", "selected-first"),
                                                ("surface-point", "selected-first")])
def envs(request):
    move, observation = request.param
    py_env = sim.IndoorSceneEnv("train", max_episode_steps=40, swap_prob=0.0, move=move, observation=observation)
    return py_env, jax_sim.from_python_env(py_env, bank_size=64)


def test_validity_reward_next_state_and_observation_agree_with_the_simulator(envs):
    py_env, env = envs
    step, observe = jax.jit(env.step), jax.jit(env.observe)
    rng = np.random.default_rng(0)
    obs, _ = py_env.reset(seed=1)
    n_valid = n_invalid = 0
    for t in range(300):
        state = jax_sim.state_from_python(py_env)
        np.testing.assert_allclose(observe(state), obs, atol=1e-5, err_msg=f"observation at step {t}")
        # half the actions small (mostly valid), half large (mostly invalid): both outcomes are exercised
        action = rng.uniform(-1, 1, 3) * (0.3 if t % 2 else 1.0)
        k = py_env.selected
        new, _, reward, terminated, truncated, valid = step(state, jnp.asarray(action, jnp.float32),
                                                            jax.random.PRNGKey(t))
        obs, py_reward, py_terminated, py_truncated, info = py_env.step(action.astype(np.float32))
        assert bool(valid) == info["valid"], f"validity differs at step {t}"
        assert float(reward) == py_reward and bool(terminated) == py_terminated
        assert bool(truncated) == py_truncated
        np.testing.assert_allclose(np.asarray(new.pos)[k], py_env.geometry_state()["object_pos"][k], atol=1e-5)
        n_valid += info["valid"]
        n_invalid += not info["valid"]
        if py_terminated or py_truncated:
            obs, _ = py_env.reset()
    assert n_valid > 30 and n_invalid > 30


def test_rollouts_with_swaps_keep_every_scene_feasible():
    py_env = sim.IndoorSceneEnv("test", max_episode_steps=25, swap_prob=0.5)
    env = jax_sim.from_python_env(py_env, bank_size=32)

    def body(carry, key):
        state, ok = carry
        k_action, k_step, k_reset = jax.random.split(key, 3)
        action = jax.random.uniform(k_action, (3,), minval=-0.4, maxval=0.4)
        state, _, _, _, truncated, valid = env.step(state, action, k_step)
        ok &= geometry.state_is_valid(env._geometry(state), xp=jnp)
        reset_state, _ = env.reset(k_reset)
        state = jax.tree_util.tree_map(lambda r, s: jnp.where(truncated, r, s), reset_state, state)
        return (state, ok), (valid, state.ids)

    state, _ = env.reset(jax.random.PRNGKey(0))
    (_, ok), (valid, ids) = jax.jit(lambda s: jax.lax.scan(body, (s, True), jax.random.split(
        jax.random.PRNGKey(1), 400)))(state)
    assert bool(ok)
    assert 0.2 < float(valid.mean()) < 1.0
    ids = np.asarray(ids)
    assert all(len(set(row)) == 3 for row in ids)  # three distinct active objects
    assert np.any(ids[1:] != ids[:-1])  # swaps happen
