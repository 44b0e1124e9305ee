"""Intrinsic pretraining of the data-generating agent (paper section 4.2) and agent checkpoints.

Before the RLS3 loop the agent learns from the feasibility reward alone (+1 valid move, -1 invalid), 100k
steps in the paper. Two drivers, same agent functions:

- `run_python(env, agent, state, buffer, steps, seed)`: steps a Gymnasium environment (the Python
  simulator) with one fused jitted dispatch per environment step (`agent.step`, an
  `rls3_jax.sac.bundle.Agent` such as `rls3_jax.sac.agents.get("sac")`).
- `run_jitted(jax_env, agent, state, buffer, steps, seed)`: environment, buffer and update all inside
  one `lax.scan` (PureJaxRL style), for an environment written as pure JAX functions
  (`rls3_jax.envs.jax_sim`). This is the fast path.

`save(path, state, buffer)` / `load(path)` checkpoint agent state and replay buffer (orbax via
`rls3_jax.checkpoint`, the loop's format), so the loop starts from a pretrained agent.

    python -m rls3_jax.sac.pretrain --steps 100000 --out runs/pretrained_sac
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from rls3_jax import checkpoint
from rls3_jax.sac import agent as sac
from rls3_jax.sac import buffer as replay
from rls3_jax.sac import random_agent
from rls3_jax.sac.agents import AGENTS  # the bundles by name: what `load` rebuilds a checkpoint's agent with
from rls3_jax.sac.bundle import Agent
from rls3_jax.sac.config import SACConfig
from rls3_jax.sac.rollout import move


def _check_unit_box(space) -> None:
    low, high = np.asarray(space.low), np.asarray(space.high)
    if not (np.all(low == -1.0) and np.all(high == 1.0)):
        raise ValueError(f"the agents act in [-1, 1]; the environment's action space is [{low}, {high}]")


def _check_finite(metrics: dict, where: str) -> None:
    for name, value in metrics.items():
        if not np.all(np.isfinite(np.asarray(value))):
            raise FloatingPointError(f"SAC metric {name} is not finite ({value}) {where}")


def run_python(env, agent: Agent, state, buffer, steps: int, seed: int = 0):
    """Run `steps` environment steps of `env` (Gymnasium API, info["valid"]) with learning as configured.

    Returns (state, buffer, valid) with `valid` a bool numpy array, one entry per step.
    """
    _check_unit_box(env.action_space)
    valid = np.zeros(steps, bool)
    obs, _ = env.reset(seed=seed)
    obs = np.asarray(obs, np.float32)
    action, state = agent.act(state, obs)
    metrics = {}
    for t in range(steps):
        state, buffer, done = move(env, agent, state, buffer, obs, action)
        obs, action, metrics, valid[t] = done.obs, done.action, done.metrics, bool(done.info["valid"])
    _check_finite(metrics, f"after {steps} steps of pretraining")
    return state, buffer, valid


@functools.partial(jax.jit, static_argnums=(0, 1, 2), donate_argnums=(3, 4))
def _scan_steps(jax_env, agent, steps, state, buffer, env_state, obs, action, key):
    def body(carry, _):
        state, buffer, env_state, obs, action, key = carry
        key, k_step, k_reset = jax.random.split(key, 3)
        env_state, next_obs, reward, terminated, truncated, valid = jax_env.step(env_state, action, k_step)
        transition = replay.Transition(obs, action, reward, next_obs, terminated.astype(jnp.float32))
        done = terminated | truncated
        reset_state, reset_obs = jax_env.reset(k_reset)
        env_state = jax.tree_util.tree_map(lambda r, s: jnp.where(done, r, s), reset_state, env_state)
        obs = jnp.where(done, reset_obs, next_obs)
        action, state, buffer, _, metrics = agent.step(state, buffer, transition, obs)
        return (state, buffer, env_state, obs, action, key), (valid, metrics.get("critic_loss", jnp.zeros(())))

    carry, (valid, critic_loss) = jax.lax.scan(body, (state, buffer, env_state, obs, action, key), None, steps)
    return carry, valid, critic_loss


def rollout_start(jax_env, agent: Agent, state, seed: int = 0):
    """Reset `jax_env` and choose the first action: (state, carry) for `rollout`."""
    key, k_reset = jax.random.split(jax.random.PRNGKey(seed))
    env_state, obs = jax_env.reset(k_reset)
    action, state = agent.act(state, obs)
    return state, (env_state, obs, action, key)


def rollout(jax_env, agent: Agent, state, buffer, carry, steps: int):
    """`steps` environment steps with learning, all in one compiled lax.scan (state and buffer are donated).

    `jax_env` is a static argument (hashed by identity: reuse one object, and one `steps`, to reuse the
    compiled scan) providing `reset(key) -> (env_state, obs)` and
    `step(env_state, action, key) -> (env_state, obs, reward, terminated, truncated, valid)`.
    Returns (state, buffer, carry, valid, critic_loss) with one entry per step in the last two.
    """
    env_state, obs, action, key = carry
    key, k_run = jax.random.split(key)
    (state, buffer, env_state, obs, action, _), valid, critic_loss = _scan_steps(
        jax_env, agent, steps, state, buffer, env_state, obs, action, k_run)
    return state, buffer, (env_state, obs, action, key), valid, critic_loss


def run_jitted(jax_env, agent: Agent, state, buffer, steps: int, seed: int = 0, chunk: int = 10_000):
    """Like `run_python` on a pure-JAX environment (`rls3_jax.envs.jax_sim`), `chunk` steps per compiled scan."""
    state, carry = rollout_start(jax_env, agent, state, seed)
    valid_parts = []
    done = 0
    while done < steps:
        n = min(chunk, steps - done)
        state, buffer, carry, valid, critic_loss = rollout(jax_env, agent, state, buffer, carry, n)
        valid_parts.append(valid)
        done += n
        _check_finite({"critic_loss": critic_loss}, f"in pretraining steps {done - n}..{done}")
    return state, buffer, np.concatenate([np.asarray(v) for v in valid_parts])


# ---------------------------------------------------------------- checkpoints


def _to_tree(x: Any) -> Any:
    return jax.tree_util.tree_map(np.asarray, serialization.to_state_dict(x))


def save(path, state, buffer: replay.ReplayBuffer, metadata: dict | None = None) -> Path:
    """Checkpoint the agent state and the filled part of the replay buffer into the directory `path`."""
    kind = "random" if isinstance(state, random_agent.RandomState) else "sac"
    size = int(buffer.size)
    # the filled rows (at least one: orbax stores no empty arrays; `buffer_size` says how many count)
    data = jax.tree_util.tree_map(lambda a: np.asarray(a[: max(1, size)]), buffer.data._asdict())
    tree = {"agent": _to_tree(state), "buffer": {"data": data, "ptr": np.asarray(buffer.ptr)}}
    meta = {
        "agent": kind,
        "config": dataclasses.asdict(state.config),
        "obs_dim": state.obs_dim,
        "act_dim": state.act_dim,
        "buffer_capacity": buffer.capacity,
        "buffer_size": size,
        **(metadata or {}),
    }
    return checkpoint.save(path, tree, meta)


def load(path):
    """Read a checkpoint written by `save`: (state, buffer, metadata)."""
    tree, meta = checkpoint.load(path)
    for field in ("agent", "config", "obs_dim", "act_dim", "buffer_capacity", "buffer_size"):
        if field not in meta:
            raise ValueError(f"{path} is not an agent checkpoint: metadata field {field!r} is missing")
    if meta["agent"] not in AGENTS:
        raise ValueError(f"{path}: unknown agent kind {meta['agent']!r}, expected one of {sorted(AGENTS)}")
    config_fields = dict(meta["config"])
    config_fields["hidden_sizes"] = tuple(config_fields["hidden_sizes"])
    config = SACConfig(**config_fields)
    template = AGENTS[meta["agent"]].init(config, meta["obs_dim"], meta["act_dim"], 0)
    try:
        restored = serialization.from_state_dict(template, tree["agent"])
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: agent state does not match a {meta['agent']} agent of this config: {e}") from e
    state = checkpoint.restore_like(template, restored)

    capacity, size = int(meta["buffer_capacity"]), int(meta["buffer_size"])
    buffer = replay.init(capacity, meta["obs_dim"], meta["act_dim"])
    stored = tree["buffer"]["data"]
    if set(stored) != set(replay.Transition._fields):
        raise ValueError(f"{path}: buffer fields {sorted(stored)} are not {sorted(replay.Transition._fields)}")
    data = replay.Transition(**{
        name: getattr(buffer.data, name).at[:size].set(jnp.asarray(stored[name][:size], jnp.float32))
        for name in replay.Transition._fields
    })
    buffer = buffer.replace(data=data, ptr=jnp.asarray(tree["buffer"]["ptr"], jnp.int32),
                            size=jnp.asarray(size, jnp.int32))
    return state, buffer, meta


# ---------------------------------------------------------------- entry point


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="Pretrain the SAC agent on the feasibility reward alone.")
    parser.add_argument("--steps", type=int, default=100_000)
    parser.add_argument("--out", required=True, help="checkpoint directory to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--driver", choices=("jit", "python"), default="jit",
                        help="jit: environment + agent in one lax.scan; python: the Gymnasium simulator")
    parser.add_argument("--split", default="train")
    parser.add_argument("--valid-per-episode", type=int, default=200, help="episode ends after this many valid moves")
    parser.add_argument("--max-episode-steps", type=int, default=400, help="... or after this many steps")
    parser.add_argument("--hidden", type=int, nargs="+", default=list(SACConfig.hidden_sizes))
    parser.add_argument("--learning-starts", type=int, default=SACConfig.learning_starts)
    parser.add_argument("--buffer-size", type=int, default=SACConfig.buffer_size)
    parser.add_argument("--move", default="displacement", help="the simulator's move rule (rls3_jax.main --action)")
    parser.add_argument("--observation", default="slots", help="the object order the agent observes "
                                                                   "(rls3_jax.main --observation)")
    args = parser.parse_args(argv)
    if args.steps <= 0:
        parser.error("--steps must be positive")

    import sim  # the simulator is only needed here
    from rls3_jax.envs import jax_sim

    config = SACConfig(learning_starts=args.learning_starts, buffer_size=args.buffer_size,
                       hidden_sizes=tuple(args.hidden))
    py_env = sim.IndoorSceneEnv(split=args.split, valid_per_episode=args.valid_per_episode,
                                max_episode_steps=args.max_episode_steps, move=args.move, observation=args.observation)
    obs_dim, act_dim = py_env.observation_space.shape[0], py_env.action_space.shape[0]
    state = sac.init(config, obs_dim, act_dim, args.seed)
    buffer = replay.init(config.buffer_size, obs_dim, act_dim)
    start = time.perf_counter()
    if args.driver == "jit":
        state, buffer, valid = run_jitted(jax_sim.from_python_env(py_env), sac.SAC, state, buffer, args.steps,
                                          args.seed)
    else:
        state, buffer, valid = run_python(py_env, sac.SAC, state, buffer, args.steps, args.seed)
    seconds = time.perf_counter() - start
    last = valid[-min(1000, len(valid)):]
    summary = {"steps": args.steps, "driver": args.driver, "seconds": round(seconds, 1),
               "valid_fraction_last_1000": float(last.mean()), "valid_fraction": float(valid.mean()),
               "move": args.move, "observation": args.observation}
    save(args.out, state, buffer, {"pretraining": summary})
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
