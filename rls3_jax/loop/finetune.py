"""Algorithm 1, lines 13-19: K fine-tuning steps with validation every F, then early stopping's bookkeeping."""

from __future__ import annotations

import dataclasses
import time

import jax

from rls3_jax.config import RunConfig
from rls3_jax.loop.learner import Learner


@dataclasses.dataclass
class Progress:
    """Early stopping's state across iterations (checkpointed with the run)."""

    best_val: float
    since_best: int = 0
    vlm_steps: int = 0  # fine-tuning steps (PaliGemma) or epochs (CLIP) so far
    stopped: bool = False

    def observe(self, config: RunConfig, iteration: int, val_metric: float) -> None:
        """A significant validation improvement resets the patience; SAC runs stop once it runs out."""
        if val_metric > self.best_val + config.min_improvement:
            self.best_val, self.since_best = val_metric, 0
        else:
            self.since_best += 1
        self.stopped = (config.agent == "sac" and iteration >= config.min_iterations
                        and self.since_best >= config.patience)


def finetune(config: RunConfig, learner: Learner, vlm_state, train_set, val_set, progress: Progress,
             iteration: int, timers: dict):
    """(new VLM state, the steps' losses, [[vlm_steps, val_metric] after every F steps]). `train_set`: images,
    samples and their encoding (`Learner.encode_images`, passed on when there is one)."""
    images, samples, encoded = train_set
    extra = {} if encoded is None else {"encoded": encoded}
    val_images, val_samples = val_set
    losses, val_history, done = [], [], 0
    key = jax.random.fold_in(jax.random.PRNGKey(config.seed), iteration)
    while done < config.vlm_steps:
        chunk = min(config.eval_every, config.vlm_steps - done)
        started = time.perf_counter()
        vlm_state, chunk_losses = learner.finetune(vlm_state, images, samples, chunk, jax.random.fold_in(key, done), **extra)
        timers["vlm_training_s"] += time.perf_counter() - started
        losses.extend(float(x) for x in chunk_losses)
        done += chunk
        progress.vlm_steps += chunk
        started = time.perf_counter()
        val = learner.evaluate(vlm_state, val_images, val_samples)
        timers["vlm_inference_s"] += time.perf_counter() - started
        val_history.append([progress.vlm_steps, float(val["metric"])])
    return vlm_state, losses, val_history
