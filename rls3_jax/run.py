"""The RLS3 loop (Algorithm 1, paper section 4.5) over a run directory.

Per iteration: E episodes, each running the agent (updating every step) until T0 valid samples exist; the
episode's samples become prompts, the VLM is evaluated on them and beta * J2 is returned to the agent as the
reward of the episode's last transition (or, with `reward="per-sample"`, each valid transition gets its own
sample's reward); eta of each episode's samples join the fine-tuning batch; then K VLM steps (PaliGemma) or
epochs (CLIP) with validation every F; the batch is cleared. The fixed test set is evaluated every iteration.

Everything needed to continue exactly is checkpointed at iteration boundaries (VLM and agent states, replay
buffer, counters, validation history); all other randomness is derived from (seed, iteration, episode).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import jax
import numpy as np

from rls3_jax import blind, checkpoint, datasets, distributed, sharded_checkpoint, sharding
from rls3_jax.config import RunConfig
from rls3_jax.tensorboard import SummaryWriter

RUN_FILE = "run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"
# Fields that may differ when a run is resumed; any other difference means --out holds another run.
_RESUMABLE_CHANGES = {"iterations", "export_data", "unity_build", "unity_port", "unity_timeout_s", "agent_from", "mesh"}
VLM_CHECKPOINTS = "vlm_checkpoints"  # multi-process runs: the VLM state as orbax checkpoints (one per iteration)


class RunError(Exception):
    """A problem with the run's input or directory; its message is one line saying what and where."""


# ---------------------------------------------------------------------------------------------- set-up


def _prepare_out(out: Path, config: RunConfig, resume: bool) -> None:
    record = {"config": dataclasses.asdict(config)}
    if resume:
        if not (out / RUN_FILE).is_file():
            raise RunError(f"--resume: {out} holds no run to continue ({RUN_FILE} is missing)")
        saved = {**dataclasses.asdict(RunConfig()), **json.loads((out / RUN_FILE).read_text())["config"]}
        changed = sorted(k for k, v in record["config"].items() if k not in _RESUMABLE_CHANGES and saved[k] != v)
        if changed:
            detail = ", ".join(f"{k}: {saved[k]!r} -> {record['config'][k]!r}" for k in changed)
            raise RunError(f"--resume: the run in {out} was started with other settings ({detail})")
        return
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out} is a file, not a directory")
    if out.is_dir() and any(out.iterdir()):
        raise RunError(f"--out {out} already holds files (another run?): choose an empty directory or add --resume")
    out.mkdir(parents=True, exist_ok=True)
    _write_atomic(out / RUN_FILE, json.dumps(record, indent=2))


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)


def _budget(budget_from: str | None, key: str) -> int:
    """The SAC run's count (`key`: generated_samples or env_steps) that a random run is to match."""
    if budget_from is None:
        return 0
    path = Path(budget_from) / METRICS_FILE
    if not path.is_file():
        raise RunError(f"--budget-from {budget_from}: no {METRICS_FILE} there")
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not records:
        raise RunError(f"--budget-from {budget_from}: {METRICS_FILE} holds no iteration yet")
    return int(records[-1][key])


def make_learner(config: RunConfig):
    learning_rate = config.learning_rate if config.learning_rate > 0 else None
    if config.vlm == "weakspot":
        from rls3_jax.vlm.weakspot import WeakSpotLearner, parse_weak_terms

        return WeakSpotLearner(parse_weak_terms(config.weak_terms), config.weakspot_learns, config.vlm_steps)
    mesh = sharding.make_mesh(config.mesh)
    if config.vlm == "paligemma":
        from rls3_jax.vlm.paligemma_learner import PaliGemmaLearner

        return PaliGemmaLearner.create(config.weights, seed=config.seed, learning_rate=learning_rate,
                                       train_batch_size=config.vlm_batch_size, mesh=mesh,
                                       dtype=None if config.dtype == "auto" else config.dtype,
                                       param_dtype="bfloat16" if config.dtype == "bfloat16" else "float32")
    from rls3_jax.vlm.clip_learner import ClipLearner

    return ClipLearner.create(config.weights, seed=config.seed, negclip=config.vlm == "negclip",
                              learning_rate=learning_rate, batch_size=config.vlm_batch_size, mesh=mesh,
                              dtype=config.dtype, all_pairs=config.caption_pairs == "all",
                              freeze_vision=config.clip_vision == "frozen")


def make_env(config: RunConfig, split: str, image_size: int, **episodes):
    """The run's environment; `episodes` may give `valid_per_episode` / `max_episode_steps` (truncation)."""
    if config.env == "unity":
        from rls3_jax.envs.unity import UnityEnv

        return UnityEnv(build_path=config.unity_build, port=config.unity_port, split=split,
                        image_size=image_size, timeout_s=config.unity_timeout_s, seed=config.seed, **episodes)
    import sim

    return sim.IndoorSceneEnv(split=split, image_size=image_size, render_mode="rgb_array", **episodes)


def pretraining_episodes(config: RunConfig) -> dict:
    """Intrinsic pretraining runs episodes of the loop's shape (T0 valid moves, or the step guard), so the agent
    meets every training scene and fresh object sets; without truncation it would spend all its steps in the
    first scene it was reset to."""
    return {"valid_per_episode": config.t0, "max_episode_steps": config.episode_step_limit}


def _fixed_sets(config: RunConfig, out: Path, image_size: int):
    cache = out / "cache"

    def make(split, n, seed):
        if config.env == "sim":
            return lambda: datasets.generate_fixed_set(split, n, image_size, seed)

        def from_env():
            env = make_env(config, split, image_size)
            try:
                return datasets.collect_from_env(env, n, seed)
            finally:
                env.close()

        return from_env

    if not distributed.is_main():  # the sets are deterministic: other processes make their own, cache nothing
        return make("val", config.val_frames, datasets.VAL_SEED)(), make("test", config.test_frames, datasets.TEST_SEED)()
    val = datasets.load_or_make(cache, f"val_{config.env}_{config.val_frames}_{image_size}",
                                make("val", config.val_frames, datasets.VAL_SEED))
    test = datasets.load_or_make(cache, f"test_{config.env}_{config.test_frames}_{image_size}",
                                 make("test", config.test_frames, datasets.TEST_SEED))
    return val, test


def _blind_metrics(config: RunConfig, val_samples: list[dict], test_samples: list[dict]) -> dict:
    """What a model that never sees the image scores on the fixed sets (rls3_jax.blind), for every record.

    The sets never change during a run, so this is computed once and each record repeats it: a record read
    on its own, or a figure of one iteration, still has the floor to compare its metrics with.
    """
    return {"val_blind_metric": float(blind.blind_metric(config.vlm, val_samples)["metric"]),
            "test_blind_metric": float(blind.blind_metric(config.vlm, test_samples)["metric"])}


def _add_missing(records: list[dict], values: dict) -> list[dict]:
    """Records of a run started before a key existed get it (the value holds for every iteration)."""
    return [{**values, **r} for r in records]


# ------------------------------------------------------------------------------------------------ agent


def _agent_module(config: RunConfig):
    if config.agent == "sac":
        from rls3_jax.sac import agent
    else:
        from rls3_jax.sac import random_agent as agent
    return agent


def _sac_config(config: RunConfig):
    from rls3_jax.sac.config import SACConfig

    # The paper's buffer holds 1e6 transitions; the scaled presets never fill 100k and checkpoint it every
    # iteration, so they keep it smaller.
    return SACConfig(buffer_size=1_000_000 if config.preset == "paper" else 100_000)


def replay_template(config: RunConfig, obs_dim: int, act_dim: int):
    """An empty replay buffer of the run's capacity (also the structure checkpoints restore into)."""
    from rls3_jax.sac import buffer as replay

    return replay.init(_sac_config(config).buffer_size, obs_dim, act_dim)


def _initial_agent(config: RunConfig, obs_dim: int, act_dim: int, image_size: int):
    """The agent the loop starts from: loaded (--agent-from), pretrained on the intrinsic reward, or fresh.

    Returns (state, buffer, valid fraction over the last 1,000 pretraining steps or None).
    """
    from rls3_jax.sac import pretrain

    agent = _agent_module(config)
    if config.agent_from:
        state, buffer, _ = pretrain.load(config.agent_from)
        if (state.obs_dim, state.act_dim) != (obs_dim, act_dim):
            raise RunError(f"--agent-from {config.agent_from}: an agent for {state.obs_dim} observations and "
                           f"{state.act_dim} actions, the environment has {obs_dim} and {act_dim}")
        return state, buffer, None
    state = agent.init(_sac_config(config), obs_dim, act_dim, config.seed)
    buffer = replay_template(config, obs_dim, act_dim)
    if config.agent != "sac" or config.pretrain_steps == 0:
        return state, buffer, None
    if config.env == "sim":
        # The simulator's feasibility rules in pure JAX: rollout and updates in one lax.scan.
        import sim
        from rls3_jax.sac import jax_env

        env = jax_env.from_python_env(sim.IndoorSceneEnv(split="train", **pretraining_episodes(config)),
                                      seed=config.seed)
        state, buffer, valid = pretrain.run_jitted(env, agent, state, buffer, config.pretrain_steps, config.seed)
    else:
        env = make_env(config, "train", image_size, **pretraining_episodes(config))  # Unity keeps its first image size
        try:
            state, buffer, valid = pretrain.run_python(env, agent, state, buffer, config.pretrain_steps, config.seed)
        finally:
            env.close()
    return state, buffer, float(np.mean(valid[-1000:]))


# -------------------------------------------------------------------------------------------- progress


class Progress:
    """A one-line progress display on a terminal; silent when stderr is not one."""

    def __init__(self, total_iterations: int, episodes: int):
        self.enabled = sys.stderr.isatty()
        self.total, self.episodes = total_iterations, episodes

    def show(self, iteration: int, episode: int | None, phase: str) -> None:
        if not self.enabled:
            return
        width = 24
        done = int(width * (iteration - 1) / max(1, self.total))
        bar = "#" * done + "-" * (width - done)
        ep = f" episode {episode}/{self.episodes}" if episode is not None else ""
        sys.stderr.write(f"\r[{bar}] iteration {iteration}/{self.total}{ep} {phase:<12}")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


# --------------------------------------------------------------------------------------------- episodes


def _run_episode(env, agent, state, buffer, config: RunConfig, seed: int, timers: dict):
    """Act until T0 valid samples exist; returns the samples and the buffer indices of the transitions."""
    from rls3_jax.sac import buffer as replay

    obs, _ = env.reset(seed=seed)
    action, state = agent.act(state, obs)
    action = np.asarray(action)
    images, metadatas, valid_indices = [], [], []
    steps, last_index = 0, None
    while len(images) < config.t0 and steps < config.episode_step_limit:
        started = time.perf_counter()
        next_obs, reward, terminated, truncated, info = env.step(action)
        if info["valid"]:
            images.append(env.render())
            metadatas.append(info["metadata"])
        timers["generation_s"] += time.perf_counter() - started
        started = time.perf_counter()
        transition = replay.make_transition(obs, action, reward, next_obs, terminated)
        action, state, buffer, index, _ = agent.step(state, buffer, transition, next_obs)
        action, index = np.asarray(action), int(index)
        timers["agent_update_s"] += time.perf_counter() - started
        steps += 1
        last_index = index
        if info["valid"]:
            valid_indices.append(index)
        obs = next_obs
        if terminated or truncated:
            obs, _ = env.reset()
            action, state = agent.act(state, obs)
            action = np.asarray(action)
    return state, buffer, images, metadatas, valid_indices, last_index, steps


def _term_counts(samples: list[dict]) -> tuple[dict, dict]:
    terms, complexity = {}, {}
    for s in samples:
        for t in s["terms"]:
            terms[t] = terms.get(t, 0) + 1
        complexity[str(len(s["terms"]))] = complexity.get(str(len(s["terms"])), 0) + 1
    return terms, complexity


def _add_counts(a: dict, b: dict) -> dict:
    return {k: a.get(k, 0) + b.get(k, 0) for k in sorted({*a, *b})}


def _plain(d: dict) -> dict:
    return {str(k): float(v) for k, v in d.items()}


# ----------------------------------------------------------------------------------------------- the run


def run(config: RunConfig, out: str | os.PathLike, resume: bool = False, budget_from: str | None = None) -> list[dict]:
    """Run (or continue) the loop in `out`; returns the per-iteration records written to metrics.jsonl."""
    out = Path(out)
    budget = _budget(budget_from, config.budget_key)
    if budget and config.agent != "random":
        raise RunError("--budget-from is for --agent random: SAC runs end by early stopping")
    if budget:
        config = config.replace(budget=budget)
    if config.weights is not None and not Path(config.weights).is_dir():
        raise RunError(f"--weights {config.weights}: no such directory")
    try:
        sharding.parse_mesh(config.mesh, jax.device_count())
    except ValueError as err:
        raise RunError(str(err)) from None
    if resume and not (out / CHECKPOINT_DIR).is_dir() and (out / RUN_FILE).is_file():
        resume_from_scratch = True
    else:
        resume_from_scratch = False
    if distributed.is_main():
        _prepare_out(out, config, resume)
    distributed.barrier("prepared")

    learner = make_learner(config)
    (val_images, val_samples), (test_images, test_samples) = _fixed_sets(config, out, learner.image_size)
    blind_metrics = _blind_metrics(config, val_samples, test_samples)
    if config.num_envs > 1:
        if config.env != "sim":
            raise RunError(f"--num-envs {config.num_envs}: parallel environments run the simulator (--env sim) only")
        from rls3_jax import parallel_envs

        env = parallel_envs.make_vector_env(lambda: make_env(config, "train", learner.image_size), config.num_envs)
        space = env.single_observation_space, env.single_action_space
    else:
        env = make_env(config, "train", learner.image_size)
        space = env.observation_space, env.action_space
    obs_dim = int(space[0].shape[0])
    act_dim = int(space[1].shape[0])
    agent = _agent_module(config)
    from rls3_jax.sac import buffer as replay

    template_vlm = learner.init_state(config.seed)
    image_shape = (learner.image_size, learner.image_size, 3)
    template_agent = agent.init(_sac_config(config), obs_dim, act_dim, config.seed)
    template_buffer = replay_template(config, obs_dim, act_dim)
    test_term_counts, test_complexity_counts = _term_counts(test_samples)
    inference_s = 0.0

    if resume and not resume_from_scratch:
        tree, meta = checkpoint.load(out / CHECKPOINT_DIR)
        records, progress_state = _add_missing(meta["records"], blind_metrics), meta["progress"]
        if "env_steps" not in records[0]:  # before it, generated_samples counted invalid moves too
            raise RunError(f"--resume: the checkpoint in {out} was written by an older rls3_jax whose sample counts "
                           "differ; start a new run")
        if jax.process_count() == 1:
            vlm_state = checkpoint.restore_like(template_vlm, tree["vlm"])
            if hasattr(learner, "place"):  # onto the learner's mesh (the contract's learners all have one)
                vlm_state = learner.place(vlm_state)
        else:  # each process reads only its devices' shards
            vlm_state = sharded_checkpoint.restore(out / VLM_CHECKPOINTS / f"{len(records) - 1:05d}", template_vlm)
            tree, _ = checkpoint.load(out / _agent_checkpoint())
        agent_state = checkpoint.restore_like(template_agent, tree["agent"])
        buffer = checkpoint.restore_like(template_buffer, tree["buffer"])
        if distributed.is_main():
            # A crash between the checkpoint and the metrics write leaves metrics.jsonl one behind: re-derive it.
            _write_atomic(out / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in records))
    else:
        vlm_state = template_vlm
        started = time.perf_counter()
        agent_state, buffer, pretrain_valid = _initial_agent(config, obs_dim, act_dim, learner.image_size)
        pretrain_s = time.perf_counter() - started
        started = time.perf_counter()
        val0 = learner.evaluate(vlm_state, val_images, val_samples)
        test0 = learner.evaluate(vlm_state, test_images, test_samples)
        inference_s = time.perf_counter() - started
        records = [{
            "iteration": 0, "generated_samples": 0, "env_steps": 0, "valid_fraction": 0.0,
            "mean_extrinsic_reward": 0.0, "train_loss": None, "train_losses": [],
            "val_metric": float(val0["metric"]), "val_history": [[0, float(val0["metric"])]],
            "test_metric": float(test0["metric"]), **blind_metrics, "test_per_term": _plain(test0["per_term"]),
            "test_per_complexity": _plain(test0["per_complexity"]), "test_term_counts": test_term_counts,
            "test_complexity_counts": test_complexity_counts, "finetune_term_counts": {},
            "finetune_complexity_counts": {}, "stopped_early": False,
            "pretrain_valid_fraction": pretrain_valid, "pretrain_s": pretrain_s, "generation_s": 0.0, "vlm_inference_s": inference_s, "vlm_training_s": 0.0, "agent_update_s": 0.0,
        }]
        progress_state = {"best_val": float(val0["metric"]), "since_best": 0, "vlm_steps": 0, "stopped": False}
        _save(out, vlm_state, agent_state, buffer, records, progress_state)

    writer = SummaryWriter(out / "tensorboard") if distributed.is_main() else None
    if not resume:
        _log_scalars(writer, records[0])
    max_iterations = config.iterations if not config.budget else max(config.iterations, 10_000)
    progress = Progress(config.iterations, config.episodes)
    base_key = jax.random.PRNGKey(config.seed)
    try:
        while not progress_state["stopped"] and len(records) <= max_iterations:
            iteration = len(records)
            if config.budget and records[-1][config.budget_key] >= config.budget:
                break
            timers = {"generation_s": 0.0, "vlm_inference_s": 0.0, "vlm_training_s": 0.0, "agent_update_s": 0.0}
            batch_images, batch_samples, rewards = [], [], []
            steps = valid = 0
            # Process k runs episodes k, k + P, ... (P processes; one process: every episode in turn). After
            # each round every process holds the round's samples and scores them alike: the VLM calls are
            # collective, and the fine-tuning batch comes out the same everywhere.
            processes, me = jax.process_count(), jax.process_index()
            for first in range(0, config.episodes, processes):
                episode = first + me
                local = None
                if episode < config.episodes:
                    progress.show(iteration, episode + 1, "generating")
                    episode_seed = int(np.random.SeedSequence([config.seed, iteration, episode]).generate_state(1)[0])
                    if config.agent == "random":  # actions from the episode's seed: the same for any process count
                        agent_state = agent_state.replace(rng=jax.random.PRNGKey(episode_seed))
                    if config.num_envs > 1:
                        agent_state, buffer, images, metadatas, valid_indices, last_index, n = parallel_envs.run_episode(
                            env, agent, agent_state, buffer, config.t0, config.episode_step_limit, episode_seed, timers)
                    else:
                        agent_state, buffer, images, metadatas, valid_indices, last_index, n = _run_episode(
                            env, agent, agent_state, buffer, config, episode_seed, timers)
                    local = {"images": np.stack(images) if images else np.zeros((0, *image_shape), np.uint8),
                             "metadatas": metadatas, "steps": n}
                round_episodes = distributed.allgather_episodes(local, image_shape)
                for owner, gathered in enumerate(round_episodes):
                    if gathered is None:
                        continue
                    episode_id = first + owner
                    images, metadatas = gathered["images"], gathered["metadatas"]
                    steps += gathered["steps"]
                    valid += len(metadatas)
                    if not metadatas:
                        continue
                    rng = np.random.default_rng([config.seed, iteration, episode_id])
                    started = time.perf_counter()
                    samples = [datasets.describe(m, rng) for m in metadatas]
                    timers["generation_s"] += time.perf_counter() - started
                    progress.show(iteration, episode_id + 1, "vlm feedback")
                    started = time.perf_counter()
                    result = learner.evaluate(vlm_state, images, samples)
                    timers["vlm_inference_s"] += time.perf_counter() - started
                    rewards.append(float(result["reward"]))
                    started = time.perf_counter()
                    if owner == me:  # the reward goes to the agent that generated the episode
                        if config.reward == "per-sample":
                            amounts = config.beta * np.asarray(result["per_sample_reward"], np.float32)
                            buffer = replay.add_to_last_reward(buffer, np.asarray(valid_indices, np.int32), amounts)
                        else:
                            buffer = replay.add_to_last_reward(buffer, last_index, config.beta * float(result["reward"]))
                    timers["agent_update_s"] += time.perf_counter() - started
                    keep = rng.choice(len(samples), size=min(len(samples), config.samples_per_episode), replace=False)
                    batch_images.extend(images[i] for i in sorted(keep))
                    batch_samples.extend(samples[i] for i in sorted(keep))

            if not batch_samples:
                raise RunError(f"iteration {iteration}: the agent produced no valid sample in {steps} moves")
            batch_images = np.stack(batch_images)
            if config.export_data and distributed.is_main():
                datasets.export(out / "data" / f"iteration_{iteration:04d}", batch_images, batch_samples)

            batch_terms, batch_complexity = _term_counts(batch_samples)
            progress.show(iteration, None, "fine-tuning")
            losses, val_history, done = [], [], 0
            key = jax.random.fold_in(base_key, iteration)
            while done < config.vlm_steps:
                chunk = min(config.eval_every, config.vlm_steps - done)
                started = time.perf_counter()
                vlm_state, chunk_losses = learner.finetune(vlm_state, batch_images, batch_samples, chunk,
                                                           jax.random.fold_in(key, done))
                timers["vlm_training_s"] += time.perf_counter() - started
                losses.extend(float(x) for x in chunk_losses)
                done += chunk
                progress_state["vlm_steps"] += chunk
                started = time.perf_counter()
                val = learner.evaluate(vlm_state, val_images, val_samples)
                timers["vlm_inference_s"] += time.perf_counter() - started
                val_history.append([progress_state["vlm_steps"], float(val["metric"])])

            progress.show(iteration, None, "testing")
            started = time.perf_counter()
            test = learner.evaluate(vlm_state, test_images, test_samples)
            timers["vlm_inference_s"] += time.perf_counter() - started

            val_metric = val_history[-1][1]
            if val_metric > progress_state["best_val"] + config.min_improvement:
                progress_state["best_val"], progress_state["since_best"] = val_metric, 0
            else:
                progress_state["since_best"] += 1
            stop = (config.agent == "sac" and iteration >= config.min_iterations
                    and progress_state["since_best"] >= config.patience)
            progress_state["stopped"] = stop
            record = {
                "iteration": iteration,
                # a valid move yields an image and its metadata: that is generated data; invalid moves yield none
                "generated_samples": records[-1]["generated_samples"] + valid,
                "env_steps": records[-1]["env_steps"] + steps,
                "valid_fraction": valid / max(1, steps),
                "mean_extrinsic_reward": float(np.mean(rewards)) if rewards else 0.0,
                "train_loss": float(np.mean(losses)),
                "train_losses": losses,
                "val_metric": val_metric,
                "val_history": val_history,
                "test_metric": float(test["metric"]),
                **blind_metrics,
                "test_per_term": _plain(test["per_term"]),
                "test_per_complexity": _plain(test["per_complexity"]),
                "test_term_counts": test_term_counts,
                "test_complexity_counts": test_complexity_counts,
                # cumulative counts of the data the agent chose for fine-tuning (the paper's Fig. 6 brackets)
                "finetune_term_counts": _add_counts(records[-1]["finetune_term_counts"], batch_terms),
                "finetune_complexity_counts": _add_counts(records[-1]["finetune_complexity_counts"], batch_complexity),
                "stopped_early": stop,
                **timers,
            }
            records.append(record)
            _save(out, vlm_state, agent_state, buffer, records, progress_state)
            _log_scalars(writer, record)
    finally:
        progress.close()
        if writer is not None:
            writer.close()
        env.close()
        if config.env == "unity":
            from rls3_jax.envs.unity import close_all

            close_all()  # environments of one run share a connection; release Unity at the end
    return records


def _agent_checkpoint() -> str:
    """Multi-process runs: every process has its own agent and replay buffer, checkpointed beside the run's."""
    return CHECKPOINT_DIR if distributed.is_main() else f"{CHECKPOINT_DIR}_process{jax.process_index()}"


def _save(out: Path, vlm_state, agent_state, buffer, records: list[dict], progress_state: dict) -> None:
    """Checkpoint first, then metrics.jsonl from the checkpointed records: the two always agree.

    One process: one safetensors checkpoint. Several: the VLM state as an orbax checkpoint of this iteration
    (every process writes its shards), then each process's agent, then process 0's records, which name the
    iteration to resume from (an interrupted save leaves the previous iteration's checkpoints in use).
    """
    agent_tree = {"agent": jax.tree_util.tree_leaves(agent_state), "buffer": jax.tree_util.tree_leaves(buffer)}
    meta = {"records": records, "progress": progress_state}
    if jax.process_count() == 1:
        checkpoint.save(out / CHECKPOINT_DIR, {"vlm": jax.tree_util.tree_leaves(vlm_state), **agent_tree}, meta)
    else:
        iteration = len(records) - 1
        sharded_checkpoint.save(out / VLM_CHECKPOINTS / f"{iteration:05d}", vlm_state)
        checkpoint.save(out / _agent_checkpoint(), agent_tree, meta)
        distributed.barrier(f"saved {iteration}")
        if distributed.is_main():
            for old in sorted((out / VLM_CHECKPOINTS).iterdir())[:-1]:
                shutil.rmtree(old, ignore_errors=True)
    if distributed.is_main():
        _write_atomic(out / METRICS_FILE, "".join(json.dumps(r) + "\n" for r in records))


_SCALARS = ("generated_samples", "env_steps", "valid_fraction", "mean_extrinsic_reward", "train_loss", "val_metric",
            "test_metric", "val_blind_metric", "test_blind_metric", "generation_s", "vlm_inference_s", "vlm_training_s", "agent_update_s")


def _log_scalars(writer: SummaryWriter | None, record: dict) -> None:
    if writer is None:  # not process 0
        return
    values = {k: record[k] for k in _SCALARS if record.get(k) is not None}
    values.update({f"test_per_term/{k}": v for k, v in record["test_per_term"].items()})
    values.update({f"test_per_complexity/{k}": v for k, v in record["test_per_complexity"].items()})
    writer.scalars(record["iteration"], values)
