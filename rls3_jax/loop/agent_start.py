"""The agent the loop starts from: loaded (--agent-from), pretrained on the intrinsic reward, or fresh."""

from __future__ import annotations

import dataclasses
import logging
import time

import numpy as np

from rls3_jax.config import RunConfig
from rls3_jax.loop.components import RunError, make_env

log = logging.getLogger("rls3_jax")


def sac_config(config: RunConfig):
    from rls3_jax.sac.config import SACConfig

    # The paper's buffer holds 1e6 transitions; the scaled presets never fill 100k and checkpoint it every
    # iteration, so they keep it smaller.
    return _with_run_settings(config, SACConfig(buffer_size=1_000_000 if config.preset == "paper" else 100_000))


def _with_run_settings(config: RunConfig, sac):
    """SAC settings with the run's --agent-learning-rate, --agent-gradient-steps and --agent-target-entropy
    where given (non-zero); a loaded agent takes them too, Adam's state depends on none of them."""
    given = {"learning_rate": config.agent_learning_rate, "gradient_steps": config.agent_gradient_steps,
             "target_entropy": config.agent_target_entropy}
    return dataclasses.replace(sac, **{name: value for name, value in given.items() if value})


def replay_template(config: RunConfig, obs_dim: int, act_dim: int):
    """An empty replay buffer of the run's capacity (also the structure checkpoints restore into)."""
    from rls3_jax.sac import buffer as replay

    return replay.init(sac_config(config).buffer_size, obs_dim, act_dim)


def pretraining_episodes(config: RunConfig) -> dict:
    """Intrinsic pretraining runs episodes of the loop's shape (T0 valid moves, or the step guard), so the agent
    meets every training scene and fresh object sets; without truncation it would spend all its steps in the
    first scene it was reset to."""
    return {"valid_per_episode": config.t0, "max_episode_steps": config.episode_step_limit}


def _check_interface(config: RunConfig, pretraining: dict) -> None:
    """A pretrained agent acts and observes as the run's environment does (agents saved before the options
    existed used the paper's displacement and slot order)."""
    had = {"--action": pretraining.get("move", "displacement"),
           "--observation": pretraining.get("observation", "slots")}
    want = {"--action": config.move, "--observation": config.observation_order}
    for flag in (flag for flag in had if had[flag] != want[flag]):
        raise RunError(f"--agent-from {config.agent_from}: an agent pretrained with {flag} {had[flag]}, the run "
                       f"uses {want[flag]}")


def initial_agent(config: RunConfig, agent, obs_dim: int, act_dim: int, image_size: int):
    """(agent state, replay buffer, valid fraction over the last 1,000 pretraining steps or None); with
    --pretraining-buffer drop the buffer starts empty."""
    state, buffer, valid_fraction = _pretrained_agent(config, agent, obs_dim, act_dim, image_size)
    if config.pretraining_buffer == "drop":
        buffer = replay_template(config, obs_dim, act_dim)
    return state, buffer, valid_fraction


def _pretrained_agent(config: RunConfig, agent, obs_dim: int, act_dim: int, image_size: int):
    from rls3_jax.sac import pretrain

    if config.agent_from:
        state, buffer, meta = pretrain.load(config.agent_from)
        if (state.obs_dim, state.act_dim) != (obs_dim, act_dim):
            raise RunError(f"--agent-from {config.agent_from}: an agent for {state.obs_dim} observations and "
                           f"{state.act_dim} actions, the environment has {obs_dim} and {act_dim}")
        _check_interface(config, meta.get("pretraining", {}))
        state = state.replace(config=_with_run_settings(config, state.config))
        return state, buffer, None
    state = agent.init(sac_config(config), obs_dim, act_dim, config.seed)
    buffer = replay_template(config, obs_dim, act_dim)
    if config.agent != "sac" or config.pretrain_steps == 0:
        return state, buffer, None
    log.info("pretraining the agent on the feasibility reward: %d steps", config.pretrain_steps)
    started = time.perf_counter()
    if config.env == "sim":
        # The simulator's feasibility rules in pure JAX: rollout and updates in one lax.scan.
        import sim
        from rls3_jax.envs import jax_sim

        python_env = sim.IndoorSceneEnv(split="train", move=config.move, observation=config.observation_order,
                                        **pretraining_episodes(config))
        env = jax_sim.from_python_env(python_env, seed=config.seed)
        state, buffer, valid = pretrain.run_jitted(env, agent, state, buffer, config.pretrain_steps, config.seed)
    else:
        env = make_env(config, "train", image_size, **pretraining_episodes(config))  # Unity keeps its first image size
        try:
            state, buffer, valid = pretrain.run_python(env, agent, state, buffer, config.pretrain_steps, config.seed)
        finally:
            env.close()
    valid_fraction = float(np.mean(valid[-1000:]))
    log.info("pretrained in %.1f s; valid fraction of the last %d steps %.2f", time.perf_counter() - started,
             min(1000, len(valid)), valid_fraction)
    return state, buffer, valid_fraction
