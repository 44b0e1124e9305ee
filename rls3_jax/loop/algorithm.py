"""Algorithm 1 (paper section 4.5): the RLS3 loop over a run directory.

Per iteration: E episodes, each running the agent (updating every step) until T0 valid samples exist; the
episode's samples become prompts, the VLM is evaluated on them and beta * J2 is returned to the agent as
reward; eta of each episode's samples join the fine-tuning batch; then K VLM steps (PaliGemma) or epochs
(CLIP) with validation every F; the batch is cleared (with a data window of N, the steps draw from the last N
iterations' batches). The fixed test set is evaluated every iteration. The phases live beside this file:
episodes.py, finetune.py, data_window.py, state.py (checkpoints), records.py, reporting.py.
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from pathlib import Path

import jax

from rls3_jax import datasets, distributed, sharding
from rls3_jax.config import RunConfig
from rls3_jax.loop import data_window, rundir
from rls3_jax.loop import state as loop_state
from rls3_jax.loop.agent_start import initial_agent, replay_template, sac_config
from rls3_jax.loop.components import Components, RunError, build, spaces
from rls3_jax.loop.episodes import generate
from rls3_jax.loop.finetune import Progress, finetune
from rls3_jax.loop.fixed_sets import FixedSets, fixed_sets
from rls3_jax.loop.learner import Learner
from rls3_jax.loop.records import blind_metrics, first_record, iteration_record, new_timers
from rls3_jax.loop.reporting import Reporter
from rls3_jax.loop.state import LoopState


def run(config: RunConfig, out: str | os.PathLike, resume: bool = False, budget_from: str | None = None,
        learner: Learner | None = None) -> list[dict]:
    """Run (or continue) the loop in `out`; returns the per-iteration records written to metrics.jsonl.
    `learner` replaces the configured VLM (e.g. a test's stand-in)."""
    out, config = Path(out), checked(config, budget_from)
    with contextlib.ExitStack() as cleanup:
        with rundir.starting(out, config, resume):  # a failed start leaves `out` as it found it
            parts = build(config, learner)
            cleanup.callback(parts.close, config)
            sets = fixed_sets(config, out, parts.learner.image_size)
            blind = blind_metrics(config, sets.val_samples, sets.test_samples)
            resumed = resume and loop_state.exists(out)  # killed before its first checkpoint: start over
            state = loop_state.restore(out, template(config, parts), blind) if resumed else start(config, parts, sets, blind, out)
        report = Reporter(out, config, done=len(state.records) - 1)
        cleanup.callback(report.close)
        if not resumed:
            report.iteration(state.records[0])
        window = data_window.restore(out, state.iteration, config.data_window, parts.learner, state.vlm)
        while not finished(config, state):
            iteration, timers = state.iteration, new_timers()
            # lines 3-12: episodes, the VLM's failure on each as the agent's reward, eta of each kept
            made = generate(config, parts, state.vlm, state.agent, state.buffer, iteration, timers,
                            show=functools.partial(report.phase, iteration))
            if (config.export_data or config.data_window > 1) and distributed.is_main():
                datasets.export(data_window.batch_dir(out, iteration), made.images, made.samples)
            # lines 13-19: K fine-tuning steps with validation every F; early stopping on validation
            report.phase(iteration, None, "fine-tuning")
            # frozen work on the batch done once, not again in each later iteration's fine-tuning
            encoded = timed(timers, "vlm_training_s", data_window.encode, parts.learner, state.vlm, made.images)
            window = data_window.slide(window, data_window.Batch(made.images, made.samples, encoded), config.data_window)
            images, samples, encoded = data_window.fine_tuning_set(window)
            vlm, losses, val_history = finetune(config, parts.learner, state.vlm, (images, samples, encoded),
                                                (sets.val_images, sets.val_samples), state.progress, iteration, timers)
            report.phase(iteration, None, "testing")
            test = timed(timers, "vlm_inference_s", parts.learner.evaluate, vlm, sets.test_images, sets.test_samples)
            state.progress.observe(config, iteration, val_history[-1][1])
            record = iteration_record(state.records[-1], iteration, made, len(samples), losses, val_history, test,
                                      sets.test_samples, blind, state.progress.stopped, timers)
            state = LoopState(vlm, made.agent, made.buffer, [*state.records, record], state.progress)
            loop_state.save(out, state)
            report.iteration(record, made.shown)
    return state.records


def checked(config: RunConfig, budget_from: str | None) -> RunConfig:
    """The run's input checked before anything is built or written; a random run gets its budget."""
    budget = rundir.budget(budget_from, config.budget_key)
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
    return config


def finished(config: RunConfig, state: LoopState) -> bool:
    """Early stopping (SAC), the budget (a random run matching a SAC run's), or the iteration bound."""
    if state.progress.stopped:
        return True
    if config.budget:
        return state.records[-1][config.budget_key] >= config.budget or state.iteration > max(config.iterations, 10_000)
    return state.iteration > config.iterations


def timed(timers: dict, key: str, function, *args):
    started = time.perf_counter()
    result = function(*args)
    timers[key] += time.perf_counter() - started
    return result


def template(config: RunConfig, parts: Components) -> LoopState:
    """The structure of the loop's state (what a checkpoint restores into), before any learning."""
    obs_dim, act_dim = spaces(parts.env)
    return LoopState(vlm=parts.learner.init_state(config.seed),
                     agent=parts.agent.init(sac_config(config), obs_dim, act_dim, config.seed),
                     buffer=replay_template(config, obs_dim, act_dim), records=[], progress=Progress(0.0))


def start(config: RunConfig, parts: Components, sets: FixedSets, blind: dict, out: Path) -> LoopState:
    """Iteration 0: the agent pretrained (Algorithm 1 line 1), the VLM measured before fine-tuning."""
    obs_dim, act_dim = spaces(parts.env)
    vlm = parts.learner.init_state(config.seed)
    started = time.perf_counter()
    agent, buffer, pretrain_valid = initial_agent(config, parts.agent, obs_dim, act_dim, parts.learner.image_size)
    pretrain_s = time.perf_counter() - started
    timers = {"vlm_inference_s": 0.0}
    val = timed(timers, "vlm_inference_s", parts.learner.evaluate, vlm, sets.val_images, sets.val_samples)
    test = timed(timers, "vlm_inference_s", parts.learner.evaluate, vlm, sets.test_images, sets.test_samples)
    record = first_record(val, test, sets.test_samples, blind, pretrain_valid, pretrain_s, timers["vlm_inference_s"])
    state = LoopState(vlm, agent, buffer, [record], Progress(best_val=float(val["metric"])))
    loop_state.save(out, state)
    return state
