"""One move of an agent in a Gymnasium environment: the act-step both Python drivers share (the loop's
episodes and intrinsic pretraining's `run_python`; the jitted driver is its `lax.scan` twin in pretrain.py)."""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from rls3_jax.sac import buffer as replay
from rls3_jax.sac.bundle import Agent


@dataclasses.dataclass
class Move:
    obs: np.ndarray  # what the agent acts on next (the reset observation when the episode ended)
    action: object  # the agent's next action
    info: dict  # the environment's info of this move (info["valid"], info["metadata"])
    slot: int  # the replay-buffer slot of this move's transition
    image: np.ndarray | None  # the render after a valid move, when asked for
    metrics: dict  # the agent update's metrics


def move(env, agent: Agent, state, buffer, obs, action, render: bool = False, timers: dict | None = None):
    """Step `env` with `action`, store the transition, update the agent and choose the next action.
    `timers` (optional) accumulates generation_s (environment, render) and agent_update_s."""
    started = time.perf_counter()
    action_host = np.asarray(action)
    next_obs, reward, terminated, truncated, info = env.step(action_host)
    next_obs = np.asarray(next_obs, np.float32)
    image = env.render() if render and info["valid"] else None
    transition = replay.make_transition(obs, action_host, reward, next_obs, terminated)
    obs = np.asarray(env.reset()[0], np.float32) if terminated or truncated else next_obs
    generated = time.perf_counter()
    action, state, buffer, slot, metrics = agent.step(state, buffer, transition, obs)
    if timers is not None:
        action, slot = np.asarray(action), int(slot)  # waits for the update, so the timer holds it
        timers["generation_s"] += generated - started
        timers["agent_update_s"] += time.perf_counter() - generated
    return state, buffer, Move(obs, action, info, slot, image, metrics)
