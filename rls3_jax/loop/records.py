"""The per-iteration record metrics.jsonl holds: what was generated, learned, measured and how long it took."""

from __future__ import annotations

import numpy as np

from rls3_jax import blind
from rls3_jax.config import RunConfig
from rls3_jax.loop.episodes import Generated

TIMERS = ("generation_s", "vlm_inference_s", "vlm_training_s", "agent_update_s")


def new_timers() -> dict:
    return dict.fromkeys(TIMERS, 0.0)


def blind_metrics(config: RunConfig, val_samples: list[dict], test_samples: list[dict]) -> dict:
    """What a model that never sees the image scores on the fixed sets (rls3_jax.blind), for every record.

    The sets never change during a run, so this is computed once and each record repeats it: a record read
    on its own, or a figure of one iteration, still has the floor to compare its metrics with.
    """
    return {"val_blind_metric": float(blind.blind_metric(config.vlm, val_samples)["metric"]),
            "test_blind_metric": float(blind.blind_metric(config.vlm, test_samples)["metric"])}


def term_counts(samples: list[dict]) -> tuple[dict, dict]:
    """How many samples hold each spatial term, and how many have 1, 2 or 3 terms."""
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


def _test_fields(test, test_samples: list[dict], blind: dict) -> dict:
    terms, complexity = term_counts(test_samples)
    return {"test_metric": float(test["metric"]), **blind, "test_per_term": _plain(test["per_term"]),
            "test_per_complexity": _plain(test["per_complexity"]), "test_term_counts": terms,
            "test_complexity_counts": complexity}


def first_record(val, test, test_samples, blind: dict, pretrain_valid, pretrain_s: float, inference_s: float) -> dict:
    """Iteration 0: the VLM before fine-tuning, and the agent's pretraining."""
    return {
        "iteration": 0, "generated_samples": 0, "env_steps": 0, "valid_fraction": 0.0,
        "mean_extrinsic_reward": 0.0, "finetune_samples": 0, "train_loss": None, "train_losses": [],
        "val_metric": float(val["metric"]), "val_history": [[0, float(val["metric"])]],
        **_test_fields(test, test_samples, blind), "finetune_term_counts": {}, "finetune_complexity_counts": {},
        "stopped_early": False, "pretrain_valid_fraction": pretrain_valid, "pretrain_s": pretrain_s,
        **new_timers(), "vlm_inference_s": inference_s,
    }


def iteration_record(previous: dict, iteration: int, generated: Generated, finetune_samples: int, losses: list[float],
                     val_history: list, test, test_samples, blind: dict, stopped: bool, timers: dict) -> dict:
    batch_terms, batch_complexity = term_counts(generated.samples)
    return {
        "iteration": iteration,
        # a valid move yields an image and its metadata: that is generated data; invalid moves yield none
        "generated_samples": previous["generated_samples"] + generated.valid,
        "env_steps": previous["env_steps"] + generated.steps,
        "valid_fraction": generated.valid / max(1, generated.steps),
        "mean_extrinsic_reward": float(np.mean(generated.rewards)) if generated.rewards else 0.0,
        "finetune_samples": finetune_samples,  # the set the steps drew from: this batch, or the data window's
        "train_loss": float(np.mean(losses)),
        "train_losses": losses,
        "val_metric": val_history[-1][1],
        "val_history": val_history,
        **_test_fields(test, test_samples, blind),
        # cumulative counts of the data the agent chose for fine-tuning (the paper's Fig. 6 brackets)
        "finetune_term_counts": _add_counts(previous["finetune_term_counts"], batch_terms),
        "finetune_complexity_counts": _add_counts(previous["finetune_complexity_counts"], batch_complexity),
        "stopped_early": stopped,
        **timers,
    }
