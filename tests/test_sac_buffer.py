"""The device replay buffer: ring semantics, uniform sampling of filled slots, the delayed-reward patch."""

import chex
import jax
import numpy as np
import pytest

from rls3_jax.sac import agent as sac
from rls3_jax.sac import buffer as replay
from rls3_jax.sac.config import SACConfig


def _transition(i, obs_dim=3, act_dim=2):
    return replay.make_transition(np.full(obs_dim, i), np.full(act_dim, i / 100), i, np.full(obs_dim, i + 1), 0.0)


def test_add_wraps_around_and_sample_draws_only_filled_slots():
    buffer = replay.init(5, 3, 2)
    for i in range(3):
        buffer, _ = replay.add(buffer, _transition(i))
    assert int(buffer.size) == 3 and int(buffer.ptr) == 3
    batch = replay.sample(buffer, jax.random.PRNGKey(0), 200)
    assert set(np.asarray(batch.reward).tolist()) == {0.0, 1.0, 2.0}
    np.testing.assert_array_equal(batch.next_obs[:, 0], batch.obs[:, 0] + 1)  # rows stay together
    for i in range(3, 7):
        buffer, _ = replay.add(buffer, _transition(i))
    assert int(buffer.size) == 5 and int(buffer.ptr) == 2
    np.testing.assert_array_equal(buffer.data.reward, [5, 6, 2, 3, 4])


def test_add_rejects_a_transition_of_the_wrong_shape():
    buffer = replay.init(4, 3, 2)
    with pytest.raises(AssertionError):
        replay.add(buffer, _transition(0, obs_dim=4))


def test_delayed_reward_changes_exactly_the_last_transition_of_the_episode():
    """Algorithm 1, lines 10-13: beta * J2 lands on the episode's last transition, nothing else moves."""
    config = SACConfig(hidden_sizes=(8,), batch_size=4, buffer_size=16, learning_starts=4)
    state = sac.init(config, 3, 2, seed=0)
    buffer = replay.init(config.buffer_size, 3, 2)
    obs = np.zeros(3, np.float32)
    action, state = sac.act(state, obs)
    episode_length, last_index = 7, None
    for t in range(20):  # wraps the 16-slot ring, so the slot is not simply t
        a = np.asarray(action)
        next_obs = obs + 1
        transition = replay.make_transition(obs, a, 1.0, next_obs, 0.0)
        action, state, buffer, index, _ = sac.step(state, buffer, transition, next_obs)
        obs = next_obs
        if t == 2 * episode_length - 1:  # the second episode ends at step 14 (slot 13)
            last_index = index
            before = jax.tree_util.tree_map(np.array, buffer)
            buffer = replay.add_to_last_reward(buffer, last_index, 10.0 * 2.5)
            after = jax.tree_util.tree_map(np.array, buffer)
            expected_reward = before.data.reward.copy()
            expected_reward[13] += 25.0
            assert int(last_index) == 13
            np.testing.assert_array_equal(after.data.reward, expected_reward)
            chex.assert_trees_all_equal(after.data._replace(reward=None), before.data._replace(reward=None))
            assert int(after.ptr) == int(before.ptr) and int(after.size) == int(before.size)
    # the patched transition survives later adds until the ring comes back to it
    assert float(buffer.data.reward[13]) == 26.0
    assert np.sum(np.asarray(buffer.data.reward) != 1.0) == 1


def test_delayed_reward_rejects_a_slot_outside_the_buffer():
    buffer = replay.init(4, 3, 2)
    with pytest.raises(IndexError, match="slot 4"):
        replay.add_to_last_reward(buffer, 4, 1.0)
