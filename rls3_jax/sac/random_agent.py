"""The paper's baseline: an agent that samples the action space uniformly and learns nothing.

`RANDOM` is an `rls3_jax.sac.bundle.Agent` with the signatures of `rls3_jax.sac.agent.SAC` (init, act,
update, train_step, step), so the RLS3 loop runs either agent unchanged; train_step and update only count.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from rls3_jax.sac import buffer as replay
from rls3_jax.sac.bundle import Agent
from rls3_jax.sac.config import SACConfig


@struct.dataclass
class RandomState:
    rng: jax.Array
    env_steps: jax.Array  # int32 ()
    updates: jax.Array  # int32 (), always 0
    config: SACConfig = struct.field(pytree_node=False)
    obs_dim: int = struct.field(pytree_node=False)
    act_dim: int = struct.field(pytree_node=False)


def init(config: SACConfig, obs_dim: int, act_dim: int, seed: int | jax.Array = 0) -> RandomState:
    if obs_dim <= 0 or act_dim <= 0:
        raise ValueError(f"random agent needs positive obs_dim and act_dim, got {obs_dim} and {act_dim}")
    key = jax.random.PRNGKey(int(seed)) if isinstance(seed, (int, np.integer)) else jnp.asarray(seed)
    zero = jnp.zeros((), jnp.int32)
    return RandomState(rng=key, env_steps=zero, updates=zero, config=config, obs_dim=int(obs_dim),
                       act_dim=int(act_dim))


@functools.partial(jax.jit, static_argnames="deterministic")
def act(state: RandomState, obs: jax.Array, deterministic: bool = False):
    """Uniform action in [-1, 1]^act_dim for each observation (deterministic is accepted and ignored)."""
    if obs.shape[-1] != state.obs_dim:
        raise ValueError(f"random agent got observations of shape {obs.shape}, expected (..., {state.obs_dim})")
    rng, key = jax.random.split(state.rng)
    action = jax.random.uniform(key, obs.shape[:-1] + (state.act_dim,), minval=-1.0, maxval=1.0)
    return action, state.replace(rng=rng)


@jax.jit
def update(state: RandomState, batch: replay.Transition):
    return state, {}


@jax.jit
def train_step(state: RandomState, buffer: replay.ReplayBuffer):
    return state.replace(env_steps=state.env_steps + 1), {}


@functools.partial(jax.jit, donate_argnums=(0, 1))
def step(state, buffer, transition, obs_to_act_on):
    buffer, index = replay.add(buffer, transition)
    state, metrics = train_step(state, buffer)
    action, state = act(state, obs_to_act_on)
    return action, state, buffer, index, metrics


RANDOM = Agent(name="random", init=init, act=act, update=update, train_step=train_step, step=step)
