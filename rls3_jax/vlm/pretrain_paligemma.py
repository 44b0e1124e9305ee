"""Base weights of the embedded PaliGemma default: pretrained on naming the objects, not on spatial relations.

    python -m rls3_jax.vlm.pretrain_paligemma --seed 0 --out rls3_jax/assets/paligemma_base.safetensors

trains the small PaliGemma-architecture model from a random init (full fine-tuning) on train-split images of
the simulator with the question "Which objects are in the image?" answered "a blender, a plate and a yellow
bowl" (catalogue order), so that, like the paper's pretrained VLMs, it sees the objects but has not been
taught where they are relative to each other. Writes the weights (safetensors) and a JSON next to them
(config, vocabulary, the run's settings and its naming accuracy / spatial rubric score before any spatial
fine-tuning). Deterministic under --seed.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rls3_jax.prompts import describe_pair
from rls3_jax.vlm import paligemma_learner, paligemma_train
from rls3_jax.vlm.paligemma import init_params
from rls3_jax.vlm.paligemma_inputs import WordPrompts, preprocess_images, sequence_length, training_batch
from rls3_jax.vlm.word_tokenizer import WordTokenizer

NAMING_QUESTION = "Which objects are in the image?"


def naming_answer(names, catalogue) -> str:
    """'a blender, a plate and a yellow bowl' (catalogue order, so the answer depends on the set only)."""
    ordered = sorted(names, key=catalogue.index)
    phrases = [("an " if n[0] in "aeiou" else "a ") + n for n in ordered]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def pretrain(seed: int = 0, steps: int = 1000, n_train: int = 1536, batch_size: int = 24, learning_rate: float = 2e-3):
    """(config, params, tokenizer, info) after `steps` full fine-tuning steps on the naming task."""
    import sim

    catalogue = list(sim.OBJECT_NAMES)
    tokenizer = WordTokenizer.for_objects(catalogue)
    config = paligemma_learner.embedded_config(len(tokenizer))
    model, params = init_params(config, seed)
    prompts = WordPrompts(tokenizer)
    t0 = time.time()
    images, metadata = sim.generate_samples("train", n_train, seed, image_size=config.vision.image_size)
    answers = [naming_answer([o["name"] for o in m["objects"]], catalogue) for m in metadata]
    questions = [NAMING_QUESTION] * n_train
    length = sequence_length(prompts, config.num_image_tokens, questions, answers)
    data = training_batch(prompts, config.num_image_tokens, questions, answers, length)
    data["pixel_values"] = preprocess_images(images, paligemma_learner.ImageSpec(config.vision.image_size))
    data = {k: jnp.asarray(v) for k, v in data.items()}
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(steps // 20, 1), steps, learning_rate * 0.05)
    tx, labels = paligemma_train.make_optimizer(params, schedule, full_finetune=True)
    step_fn = paligemma_train.make_train_step(model, tx, labels)
    opt = tx.init(params)
    key = jax.random.key(seed)
    losses = []
    t1 = time.time()
    for step_key in jax.random.split(key, steps):
        idx = jax.random.randint(step_key, (batch_size,), 0, n_train)
        params, opt, loss = step_fn(params, opt, jax.tree.map(lambda x, i=idx: jnp.take(x, i, axis=0), data))
        losses.append(loss)
    losses = [float(x) for x in jax.device_get(losses)]
    info = {
        "seed": seed, "steps": steps, "n_train": n_train, "batch_size": batch_size, "learning_rate": learning_rate,
        "task": f"{NAMING_QUESTION!r} -> objects named in catalogue order", "final_loss": float(np.mean(losses[-20:])),
        "data_seconds": round(t1 - t0, 1), "train_seconds": round(time.time() - t1, 1),
    }
    return config, params, tokenizer, info


def evaluate_base(learner, seed: int, n: int = 192) -> dict:
    """Naming exact-match on val images, mean rubric score of spatial questions on test images."""
    import sim

    catalogue = list(sim.OBJECT_NAMES)
    state = learner.init_state(seed)
    images, metadata = sim.generate_samples("val", n, seed + 1, image_size=learner.image_size)
    truth = [naming_answer([o["name"] for o in m["objects"]], catalogue) for m in metadata]
    said = learner.answer(state, images, [NAMING_QUESTION] * n)
    named = np.mean([set(a.split()) >= set(t.split()) for a, t in zip(said, truth)])
    exact = np.mean([a == t for a, t in zip(said, truth)])
    images, metadata = sim.generate_samples("test", n, seed + 2, image_size=learner.image_size)
    samples = [describe_pair(m, 0, 1) for m in metadata]
    spatial = learner.evaluate(state, images, samples)
    return {
        "naming_exact_val": float(exact), "naming_all_words_val": float(named),
        "spatial_test_mean_rubric": spatial["metric"], "spatial_test_answer_example": spatial["answers"][0],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--n-train", type=int, default=1536)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--out", type=Path, default=paligemma_learner.BASE_WEIGHTS)
    args = parser.parse_args(argv)
    config, params, tokenizer, info = pretrain(args.seed, args.steps, args.n_train, args.batch_size, args.learning_rate)
    out_json = args.out.with_suffix(".json")
    paligemma_learner.save_base(args.out, out_json, params, config, tokenizer, info)
    config_, params_, tokenizer_, _ = paligemma_learner.load_base(args.out, out_json)
    learner = paligemma_learner.PaliGemmaLearner.from_parts(config_, params_, tokenizer_)
    info.update(evaluate_base(learner, args.seed))
    paligemma_learner.save_base(args.out, out_json, params, config, tokenizer, info)
    print(info)


if __name__ == "__main__":
    main()
