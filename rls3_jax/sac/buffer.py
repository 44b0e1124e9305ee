"""Replay buffer as a ring of device arrays: a pytree with jitted add, sample and delayed-reward patch.

The buffer never leaves the device: `add` writes one transition in place (the buffer argument is donated, so
XLA updates the arrays without copying them), `sample` draws a batch of indices uniformly from the filled part.
The RLS3 loop adds the episode's VLM reward beta * J2 to the episode's last transition with
`add_to_last_reward(buffer, index, amount)`, where `index` is the slot `add` wrote that transition to
(returned by `add` and by the agents' fused `step`).
Each function is jitted once where it is defined; called from other jitted code (an agent's `step`, a
`lax.scan`) it is traced into that computation.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from flax import struct


class Transition(NamedTuple):
    """One environment step (or, with a leading batch axis, a batch of them)."""

    obs: jax.Array  # (obs_dim,)
    action: jax.Array  # (act_dim,)
    reward: jax.Array  # ()
    next_obs: jax.Array  # (obs_dim,)
    done: jax.Array  # () 1.0 when the episode terminated (no bootstrap); truncation is not termination


@struct.dataclass
class ReplayBuffer:
    data: Transition  # every leaf has a leading capacity axis
    ptr: jax.Array  # int32 (): the slot the next add writes to
    size: jax.Array  # int32 (): number of filled slots

    @property
    def capacity(self) -> int:
        return self.data.reward.shape[0]


def init(capacity: int, obs_dim: int, act_dim: int) -> ReplayBuffer:
    if capacity <= 0 or obs_dim <= 0 or act_dim <= 0:
        raise ValueError(f"replay buffer needs positive capacity/obs_dim/act_dim, got {capacity}/{obs_dim}/{act_dim}")
    data = Transition(
        obs=jnp.zeros((capacity, obs_dim), jnp.float32),
        action=jnp.zeros((capacity, act_dim), jnp.float32),
        reward=jnp.zeros((capacity,), jnp.float32),
        next_obs=jnp.zeros((capacity, obs_dim), jnp.float32),
        done=jnp.zeros((capacity,), jnp.float32),
    )
    return ReplayBuffer(data=data, ptr=jnp.zeros((), jnp.int32), size=jnp.zeros((), jnp.int32))


def make_transition(obs, action, reward, next_obs, done) -> Transition:
    """A float32 Transition of host numpy arrays (jitted calls move them to the device in one go)."""
    return Transition(
        obs=np.asarray(obs, np.float32),
        action=np.asarray(action, np.float32),
        reward=np.asarray(reward, np.float32),
        next_obs=np.asarray(next_obs, np.float32),
        done=np.asarray(done, np.float32),
    )


@functools.partial(jax.jit, donate_argnums=0)
def add(buffer: ReplayBuffer, transition: Transition) -> tuple[ReplayBuffer, jax.Array]:
    """Write one transition at `ptr`: (buffer, the slot written). The passed buffer is consumed (use the
    returned one); called inside other jitted code it is inlined and the donation does not apply."""
    chex.assert_equal_shape_suffix([buffer.data.obs, transition.obs[None]], 1)
    chex.assert_equal_shape_suffix([buffer.data.action, transition.action[None]], 1)
    chex.assert_shape([transition.reward, transition.done], ())
    index = buffer.ptr
    data = jax.tree_util.tree_map(
        lambda store, x: jax.lax.dynamic_update_index_in_dim(store, x.astype(store.dtype), index, 0),
        buffer.data,
        transition,
    )
    capacity = buffer.capacity
    buffer = buffer.replace(data=data, ptr=(index + 1) % capacity, size=jnp.minimum(buffer.size + 1, capacity))
    return buffer, index


@functools.partial(jax.jit, static_argnums=2)
def sample(buffer: ReplayBuffer, key: jax.Array, batch_size: int) -> Transition:
    """A batch drawn uniformly with replacement from the filled slots (as SB3 does)."""
    indices = jax.random.randint(key, (batch_size,), 0, jnp.maximum(buffer.size, 1))
    return jax.tree_util.tree_map(lambda store: jnp.take(store, indices, axis=0), buffer.data)


@functools.partial(jax.jit, donate_argnums=0)
def _add_reward_at(buffer: ReplayBuffer, index, amount) -> ReplayBuffer:
    index = jnp.asarray(index, jnp.int32)
    reward = buffer.data.reward.at[index].add(jnp.asarray(amount, jnp.float32))
    return buffer.replace(data=buffer.data._replace(reward=reward))


def add_to_last_reward(buffer: ReplayBuffer, index, amount) -> ReplayBuffer:
    """Add the delayed reward `amount` (e.g. beta * J2) to the transition stored at slot `index`.

    `index` must be a slot that holds a transition; the buffer argument is consumed (donated).
    """
    if isinstance(index, int) and not 0 <= index < buffer.capacity:
        raise IndexError(f"replay buffer slot {index} is outside 0..{buffer.capacity - 1}")
    return _add_reward_at(buffer, index, amount)
