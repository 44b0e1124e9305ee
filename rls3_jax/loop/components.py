"""The parts Algorithm 1 runs on, built from a RunConfig: the VLM learner, the environment, the agent.

Tests and benchmarks build their own `Components` (e.g. a stand-in learner) and pass them to `run`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from rls3_jax import sharding
from rls3_jax.config import RunConfig
from rls3_jax.envs import make_env
from rls3_jax.loop.learner import Learner


class RunError(Exception):
    """A problem with the run's input or directory; its message is one line saying what and where."""


@dataclasses.dataclass
class Components:
    learner: Learner
    env: Any = None  # built by `build_env` once the learner's image size is known, unless given
    agent: Any = None  # the agent's functions (rls3_jax.sac): SAC or random

    def close(self, config: RunConfig) -> None:
        if self.env is not None:
            self.env.close()
        if config.env == "unity":
            from rls3_jax.envs.unity import close_all

            close_all()  # environments of one run share a connection; release Unity at the end


def make_learner(config: RunConfig) -> Learner:
    learning_rate = config.learning_rate if config.learning_rate > 0 else None
    if config.vlm == "weakspot":
        from rls3_jax.vlm.weakspot import WeakSpotLearner, parse_weak_terms

        return WeakSpotLearner(parse_weak_terms(config.weak_terms), config.weakspot_learns, config.vlm_steps)
    mesh = sharding.make_mesh(config.mesh)
    if config.vlm == "paligemma":
        from rls3_jax.vlm.paligemma.learner import PaliGemmaLearner

        return PaliGemmaLearner.create(config.weights, seed=config.seed, learning_rate=learning_rate,
                                       train_batch_size=config.vlm_batch_size, mesh=mesh,
                                       dtype=None if config.dtype == "auto" else config.dtype,
                                       param_dtype="bfloat16" if config.dtype == "bfloat16" else "float32",
                                       grounded=config.grounded_answers)
    from rls3_jax.vlm.clip.learner import ClipLearner

    return ClipLearner.create(config.weights, seed=config.seed, negclip=config.vlm == "negclip",
                              learning_rate=learning_rate, batch_size=config.vlm_batch_size, mesh=mesh,
                              dtype=config.dtype, all_pairs=config.caption_pairs == "all",
                              freeze_vision=config.clip_vision == "frozen")


def build_env(config: RunConfig, image_size: int):
    """The training-scene environment the agent acts in: one, or `num_envs` stepped together."""
    if config.num_envs == 1:
        return make_env(config, "train", image_size)
    if config.env != "sim":
        raise RunError(f"--num-envs {config.num_envs}: parallel environments run the simulator (--env sim) only")
    from rls3_jax.envs import vector

    return vector.make_vector_env(lambda: make_env(config, "train", image_size), config.num_envs)


def agent_functions(config: RunConfig):
    from rls3_jax.sac import agents

    return agents.get(config.agent)


def build(config: RunConfig, learner: Learner | None = None) -> Components:
    """Every part from the config; a given `learner` (e.g. a test's stand-in) replaces the configured VLM."""
    learner = learner if learner is not None else make_learner(config)
    return Components(learner=learner, env=build_env(config, learner.image_size), agent=agent_functions(config))


def spaces(env) -> tuple[int, int]:
    """(observation size, action size) of one environment or of one of a vector env's."""
    obs_space = getattr(env, "single_observation_space", env.observation_space)
    act_space = getattr(env, "single_action_space", env.action_space)
    return int(obs_space.shape[0]), int(act_space.shape[0])
