"""Algorithm 1, lines 3-12: an iteration's episodes, their VLM rewards, and the fine-tuning batch they yield.

Process k runs episodes k, k + P, ... (P processes; one process: every episode in turn). After each round every
process holds the round's samples and scores them alike: the VLM calls are collective, and the fine-tuning
batch comes out the same everywhere. All randomness follows from (seed, iteration, episode).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import numpy as np

from rls3_jax import datasets, distributed
from rls3_jax.config import RunConfig
from rls3_jax.loop.components import Components, RunError
from rls3_jax.sac import rollout

SHOWN = 4  # generated samples per iteration shown in TensorBoard with the VLM's answers


@dataclasses.dataclass
class Generated:
    """What an iteration's episodes produced."""

    agent: object  # the agent state after the episodes' updates
    buffer: object
    images: np.ndarray  # the fine-tuning batch: eta of each episode's valid samples
    samples: list[dict]
    steps: int = 0  # moves, invalid ones included
    valid: int = 0  # valid moves: generated samples
    rewards: list[float] = dataclasses.field(default_factory=list)  # each episode's J2
    shown: list[tuple] = dataclasses.field(default_factory=list)  # a few (image, caption, VLM answer) to look at


def run_episode(env, agent, state, buffer, config: RunConfig, seed: int, timers: dict):
    """Act until T0 valid samples exist; returns the samples and the buffer slots of the transitions."""
    obs, _ = env.reset(seed=seed)
    obs = np.asarray(obs, np.float32)
    action, state = agent.act(state, obs)
    images, metadatas, valid_slots = [], [], []
    steps, last_slot = 0, None
    while len(images) < config.t0 and steps < config.episode_step_limit:
        state, buffer, done = rollout.move(env, agent, state, buffer, obs, action, render=True, timers=timers)
        obs, action, last_slot, steps = done.obs, done.action, done.slot, steps + 1
        if done.info["valid"]:
            images.append(done.image)
            metadatas.append(done.info["metadata"])
            valid_slots.append(last_slot)
    return state, buffer, images, metadatas, valid_slots, last_slot, steps


def episode_seed(config: RunConfig, iteration: int, episode: int) -> int:
    return int(np.random.SeedSequence([config.seed, iteration, episode]).generate_state(1)[0])


def _act_episode(config: RunConfig, parts: Components, out: Generated, iteration: int, episode: int, timers: dict):
    """This process's episode: (the payload every process receives, its valid and last buffer indices)."""
    seed = episode_seed(config, iteration, episode)
    if config.agent == "random":  # actions from the episode's seed: the same for any process count
        out.agent = out.agent.replace(rng=jax.random.PRNGKey(seed))
    if config.num_envs > 1:
        from rls3_jax.envs import vector

        result = vector.run_episode(parts.env, parts.agent, out.agent, out.buffer, config.t0,
                                    config.episode_step_limit, seed, timers)
    else:
        result = run_episode(parts.env, parts.agent, out.agent, out.buffer, config, seed, timers)
    out.agent, out.buffer, images, metadatas, valid_indices, last_index, steps = result
    image_shape = (parts.learner.image_size, parts.learner.image_size, 3)
    local = {"images": np.stack(images) if images else np.zeros((0, *image_shape), np.uint8),
             "metadatas": metadatas, "steps": steps}
    return local, (valid_indices, last_index)


def _reward_agent(config: RunConfig, out: Generated, result, indices) -> None:
    """The VLM's failure goes into the replay buffer (Algorithm 1 line 10): on the episode's last transition,
    or with reward="per-sample" each valid transition its own sample's."""
    from rls3_jax.sac import buffer as replay

    valid_indices, last_index = indices
    if config.reward == "per-sample":
        amounts = config.beta * np.asarray(result["per_sample_reward"], np.float32)
        out.buffer = replay.add_to_last_reward(out.buffer, np.asarray(valid_indices, np.int32), amounts)
    else:
        out.buffer = replay.add_to_last_reward(out.buffer, last_index, config.beta * float(result["reward"]))


def _score_episode(config, parts, vlm_state, out: Generated, gathered, iteration, episode, indices, timers, batch):
    """Describe an episode's samples, evaluate the VLM on them, reward the agent that made them (when it is
    this process's) and keep eta of them for fine-tuning."""
    images, metadatas = gathered["images"], gathered["metadatas"]
    out.steps += gathered["steps"]
    out.valid += len(metadatas)
    if not metadatas:
        return
    rng = np.random.default_rng([config.seed, iteration, episode])
    started = time.perf_counter()
    samples = [datasets.describe(m, rng, config.described_pair) for m in metadatas]
    timers["generation_s"] += time.perf_counter() - started
    started = time.perf_counter()
    result = parts.learner.evaluate(vlm_state, images, samples)
    timers["vlm_inference_s"] += time.perf_counter() - started
    out.rewards.append(float(result["reward"]))
    answers = result.get("answers")
    out.shown.extend((images[i], samples[i]["caption"], None if answers is None else answers[i])
                     for i in range(min(len(samples), SHOWN - len(out.shown))))
    started = time.perf_counter()
    if indices is not None:
        _reward_agent(config, out, result, indices)
    timers["agent_update_s"] += time.perf_counter() - started
    keep = sorted(rng.choice(len(samples), size=min(len(samples), config.samples_per_episode), replace=False))
    batch.extend((images[i], samples[i]) for i in keep)


def generate(config: RunConfig, parts: Components, vlm_state, agent_state, buffer, iteration: int, timers: dict,
             show=lambda episode, phase: None) -> Generated:
    """The iteration's E episodes with their rewards, and the fine-tuning batch."""
    out = Generated(agent=agent_state, buffer=buffer, images=None, samples=[])
    image_shape = (parts.learner.image_size, parts.learner.image_size, 3)
    processes, me = jax.process_count(), jax.process_index()
    batch = []
    for first in range(0, config.episodes, processes):
        local, indices = None, None
        if first + me < config.episodes:
            show(first + me + 1, "generating")
            local, indices = _act_episode(config, parts, out, iteration, first + me, timers)
        for owner, gathered in enumerate(distributed.allgather_episodes(local, image_shape)):
            if gathered is not None:
                show(first + owner + 1, "vlm feedback")
                _score_episode(config, parts, vlm_state, out, gathered, iteration, first + owner,
                               indices if owner == me else None, timers, batch)
    if not batch:
        raise RunError(f"iteration {iteration}: the agent produced no valid sample in {out.steps} moves")
    out.images = np.stack([image for image, _ in batch])
    out.samples = [sample for _, sample in batch]
    return out
