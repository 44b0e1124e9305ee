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
import math
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


def _presence(metadata, catalogue) -> np.ndarray:
    """[n, objects] 1.0 where the catalogue object is in the image."""
    out = np.zeros((len(metadata), len(catalogue)), np.float32)
    for i, m in enumerate(metadata):
        for o in m["objects"]:
            out[i, catalogue.index(o["name"])] = 1.0
    return out


def pretrain_vision(model, params, pixels, presence, steps: int, batch_size: int, learning_rate: float, key):
    """Stage 1: the SigLIP tower and the projector learn which objects are in the image.

    A throw-away linear head scores every object on every image token; the scores are pooled over tokens with
    a soft maximum (an object is present if some patch shows it) and trained with per-object logistic loss.
    A from-scratch ViT learns the 5-8 px objects far sooner this way than from the language model's loss alone
    (on naming alone the loss stalls at the answer's entropy without the image).
    """
    width, n_objects = model.config.text.hidden_size, presence.shape[1]
    trainable = {"vision_tower": params["vision_tower"], "multi_modal_projector": params["multi_modal_projector"],
                 "head": {"kernel": jnp.zeros((width, n_objects)), "bias": jnp.zeros((n_objects,))}}
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(steps // 20, 1), steps, learning_rate * 0.05)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule))
    rest = {k: v for k, v in params.items() if k not in trainable}

    def loss_fn(trainable, pixels, presence):
        tokens = model.apply({"params": {**rest, **trainable}}, pixels, method=model.embed_image)
        logits = tokens @ trainable["head"]["kernel"] + trainable["head"]["bias"]  # [B, tokens, objects]
        pooled = jax.nn.logsumexp(logits, axis=1) - jnp.log(logits.shape[1])
        return optax.sigmoid_binary_cross_entropy(pooled, presence).mean()

    @jax.jit
    def step(trainable, opt, idx):
        loss, grads = jax.value_and_grad(loss_fn)(trainable, pixels[idx], presence[idx])
        updates, opt = tx.update(grads, opt, trainable)
        return optax.apply_updates(trainable, updates), opt, loss

    opt = tx.init(trainable)
    losses = []
    for step_key in jax.random.split(key, steps):
        trainable, opt, loss = step(trainable, opt, jax.random.randint(step_key, (batch_size,), 0, len(presence)))
        losses.append(loss)
    trainable.pop("head")
    return {**params, **trainable}, [float(x) for x in jax.device_get(losses)]


def pretrain(
    seed: int = 0, steps: int = 600, n_train: int = 6144, batch_size: int = 24, learning_rate: float = 1e-3,
    vision_steps: int = 2000, vision_batch_size: int = 32, vision_learning_rate: float = 1e-3,
):
    """(config, params, tokenizer, info): stage 1 (`pretrain_vision`), then `steps` full fine-tuning steps on
    the naming question."""
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
    vision_key, key = jax.random.split(jax.random.key(seed))
    t1 = time.time()
    params, vision_losses = pretrain_vision(
        model, params, data["pixel_values"], jnp.asarray(_presence(metadata, catalogue)), vision_steps,
        vision_batch_size, vision_learning_rate, vision_key,
    )
    t2 = time.time()
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(steps // 20, 1), steps, learning_rate * 0.05)
    tx, labels = paligemma_train.make_optimizer(params, schedule, full_finetune=True)
    step_fn = paligemma_train.make_train_step(model, tx, labels)
    opt = tx.init(params)
    losses = []
    for step_key in jax.random.split(key, steps):
        idx = jax.random.randint(step_key, (batch_size,), 0, n_train)
        params, opt, loss = step_fn(params, opt, jax.tree.map(lambda x, i=idx: jnp.take(x, i, axis=0), data))
        losses.append(loss)
    losses = [float(x) for x in jax.device_get(losses)]
    info = {
        "seed": seed, "n_train": n_train,
        "vision_steps": vision_steps, "vision_batch_size": vision_batch_size, "vision_learning_rate": vision_learning_rate,
        "vision_task": "which catalogue objects are in the image (per-object logistic loss, head discarded)",
        "vision_final_loss": float(np.mean(vision_losses[-50:])),
        "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate,
        "task": f"{NAMING_QUESTION!r} -> objects named in catalogue order", "final_loss": float(np.mean(losses[-20:])),
        "data_seconds": round(t1 - t0, 1), "vision_seconds": round(t2 - t1, 1), "train_seconds": round(time.time() - t2, 1),
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
    names = [[o["name"] for o in m["objects"]] for m in metadata]
    recall = np.mean([np.mean([n in a for n in ns]) for a, ns in zip(said, names)])
    exact = np.mean([a == t for a, t in zip(said, truth)])
    images, metadata = sim.generate_samples("test", n, seed + 2, image_size=learner.image_size)
    samples = [describe_pair(m, 0, 1) for m in metadata]
    spatial = learner.evaluate(state, images, samples)
    return {
        "naming_exact_val": float(exact), "naming_object_recall_val": float(recall),
        "naming_exact_chance": 1 / math.comb(len(catalogue), 3),
        "spatial_test_mean_rubric": spatial["metric"], "spatial_test_answer_example": spatial["answers"][0],
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--n-train", type=int, default=6144)
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--vision-steps", type=int, default=2000)
    parser.add_argument("--vision-batch-size", type=int, default=32)
    parser.add_argument("--vision-learning-rate", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, default=paligemma_learner.BASE_WEIGHTS)
    args = parser.parse_args(argv)
    config, params, tokenizer, info = pretrain(
        args.seed, args.steps, args.n_train, args.batch_size, args.learning_rate, args.vision_steps,
        args.vision_batch_size, args.vision_learning_rate,
    )
    out_json = args.out.with_suffix(".json")
    paligemma_learner.save_base(args.out, out_json, params, config, tokenizer, info)
    config_, params_, tokenizer_, _ = paligemma_learner.load_base(args.out, out_json)
    learner = paligemma_learner.PaliGemmaLearner.from_parts(config_, params_, tokenizer_)
    info.update(evaluate_base(learner, args.seed))
    paligemma_learner.save_base(args.out, out_json, params, config, tokenizer, info)
    print(info)


if __name__ == "__main__":
    main()
