"""Several simulators feeding one agent (`--num-envs N`): a Gymnasium vector environment of N simulators
stepped together; the agent acts on the N observations at once, stores N transitions and takes one update
per vector step (N samples per update instead of the paper's 1). An episode still ends once T0 valid
samples exist, now counted over the N simulators together, so the VLM sees the same amount of data.
"""

from __future__ import annotations

import functools
import json
import time

import gymnasium
import jax
import numpy as np

from rls3_jax.sac import buffer as replay
from rls3_jax.sac.bundle import Agent


class _OpaqueMetadata(gymnasium.Wrapper):
    """Hands the metadata dict on as one JSON string: a vector env would split a nested dict into arrays."""

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        if "metadata" in info:
            info = {**info, "metadata": json.dumps(info["metadata"])}
        return obs, reward, terminated, truncated, info


def make_vector_env(make_one, num_envs: int) -> gymnasium.vector.SyncVectorEnv:
    """N environments from `make_one()` in one process (the simulator is cheap; Unity builds would each be
    their own process on their own port)."""
    return gymnasium.vector.SyncVectorEnv([lambda: _OpaqueMetadata(make_one()) for _ in range(num_envs)])


@functools.partial(jax.jit, static_argnums=0, donate_argnums=(1, 2))
def _step_many(agent, state, buffer, transitions, obs):
    """(state, buffer, transitions [N], observations [N, obs]) -> (actions [N, act], state, buffer, slots [N]):
    store every transition, one agent update, act on every observation; compiled once per agent bundle."""
    buffer, slots = jax.lax.scan(replay.add, buffer, transitions)
    state, _ = agent.train_step(state, buffer)
    actions, state = agent.act(state, obs)
    return actions, state, buffer, slots


def run_episode(vec_env, agent: Agent, state, buffer, t0: int, step_limit: int, seed: int, timers: dict):
    """Step the N simulators until T0 valid samples exist (or `step_limit` vector steps); returns
    (state, buffer, images, metadatas, slots of the valid transitions, slot of the last transition, moves)."""
    obs, _ = vec_env.reset(seed=seed)  # simulator i gets seed + i
    actions, state = agent.act(state, np.asarray(obs, np.float32))
    actions = np.asarray(actions)
    images, metadatas, valid_slots = [], [], []
    steps, last_slot = 0, None
    while len(images) < t0 and steps < step_limit:
        started = time.perf_counter()
        next_obs, reward, terminated, _, info = vec_env.step(actions)
        valid = np.asarray(info["valid"], bool)
        for i in np.flatnonzero(valid):
            images.append(vec_env.envs[i].render())
            metadatas.append(json.loads(info["metadata"][i]))
        timers["generation_s"] += time.perf_counter() - started
        started = time.perf_counter()
        transitions = replay.make_transition(obs, actions, reward, next_obs, terminated)
        actions, state, buffer, slots = _step_many(agent, state, buffer, transitions, np.asarray(next_obs, np.float32))
        actions, slots = np.asarray(actions), np.asarray(slots)
        timers["agent_update_s"] += time.perf_counter() - started
        steps += len(valid)
        valid_slots.extend(int(s) for s in slots[valid])
        last_slot = int(slots[-1])
        obs = next_obs  # the simulator never ends an episode itself (terminated/truncated stay False)
    # The last vector step may pass T0: keep the episode at exactly T0 samples, as with one simulator.
    return state, buffer, images[:t0], metadatas[:t0], valid_slots[:t0], last_slot, steps
