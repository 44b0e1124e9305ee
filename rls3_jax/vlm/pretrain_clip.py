"""Base weights of the embedded default CLIP: contrastive pre-training on *naming* the objects of the
training scenes ("a blender, a plate and a yellow bowl", objects in random order), never on where they are.

Like the paper's pretrained VLMs, the result sees the objects but has not been taught their spatial
relations; the spatial skill must come from the RLS3 loop. Reproduce the shipped file with

    python -m rls3_jax.vlm.pretrain_clip --seed 0 --out rls3_jax/assets/clip_base.safetensors

which writes the safetensors (transformers' parameter names) and a JSON beside it (config, tokenizer
words, how it was made).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import numpy as np
from safetensors.numpy import save_file

from rls3_jax.vlm import clip as clip_model
from rls3_jax.vlm import contrastive
from rls3_jax.vlm.clip_learner import default_config
from rls3_jax.vlm.clip_loading import _paths, flax_to_hf, hf_name
from rls3_jax.vlm.tokenizer import WORDS, WordTokenizer


def object_list_caption(names, rng: np.random.Generator) -> str:
    """'a blender, a plate and a yellow bowl' with the objects in a random order."""
    names = [names[i] for i in rng.permutation(len(names))]
    return ", ".join(f"a {n}" for n in names[:-1]) + f" and a {names[-1]}"


def save_base_weights(out: Path, config, params, meta: dict) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        hf_name(p): np.array(flax_to_hf(p, np.asarray(v, np.float32)), order="C") for p, v in _paths(params)
    }
    save_file(tensors, str(out), metadata={"format": "pt"})
    with open(out.with_suffix(".json"), "w") as f:
        json.dump({"config": config.to_hf_config(), "words": list(WORDS), **meta}, f, indent=1)
    return out


def pretrain(
    seed: int = 0,
    samples: int = 2000,
    epochs: int = 6,
    batch_size: int = 64,
    learning_rate: float = 1e-3,
    log=print,
):
    """(config, params, meta) after contrastive object-naming pre-training on sim's train split."""
    import sim  # the simulator renders the training scenes

    start = time.time()
    tokenizer = WordTokenizer(WORDS, max_length=default_config(1).text.max_position_embeddings)
    config = default_config(tokenizer.vocab_size)
    size = config.vision.image_size
    images, metadatas = sim.generate_samples("train", samples, seed, image_size=size)
    names = [[o["name"] for o in m["objects"]] for m in metadatas]
    log(f"rendered {samples} training-scene images at {size} px in {time.time() - start:.0f} s")

    steps_per_epoch = samples // batch_size
    train_config = contrastive.TrainConfig(
        learning_rate=learning_rate,
        warmup_steps=50,
        decay_steps=epochs * steps_per_epoch,
        end_learning_rate_factor=0.05,
        weight_decay=0.05,
    )
    optimizer = contrastive.make_optimizer(train_config)
    model = clip_model.CLIPModel(config)
    state = contrastive.init_train_state(clip_model.init_params(config, seed), optimizer)
    step = contrastive.make_train_step(model, optimizer)
    device_images = jax.numpy.asarray(images)
    rng = np.random.default_rng(seed)
    valid = jax.numpy.ones((batch_size,), bool)
    losses = []
    for epoch in range(epochs):
        order = rng.permutation(samples)
        epoch_losses = []
        for s in range(steps_per_epoch):
            idx = order[s * batch_size : (s + 1) * batch_size]
            ids, mask = tokenizer.encode([object_list_caption(names[i], rng) for i in idx])
            batch = {"images": device_images[idx], "input_ids": ids, "attention_mask": mask, "valid": valid}
            state, metrics = step(state, batch)
            epoch_losses.append(metrics["loss"])
        epoch_losses = [float(v) for v in jax.device_get(epoch_losses)]
        losses.append(float(np.mean(epoch_losses)))
        contrastive.check_finite(losses[-1], f"pre-training epoch {epoch}")
        log(f"epoch {epoch}: loss {losses[-1]:.3f} ({time.time() - start:.0f} s)")
    meta = {
        "seed": seed,
        "samples": samples,
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "task": "contrastive object naming on sim train-split renders (no spatial terms)",
        "epoch_losses": losses,
        "seconds": round(time.time() - start, 1),
    }
    return config, jax.device_get(state["params"]), meta


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("rls3_jax/assets/clip_base.safetensors"))
    parser.add_argument("--samples", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    args = parser.parse_args(argv)
    config, params, meta = pretrain(args.seed, args.samples, args.epochs, args.batch_size, args.learning_rate)
    out = save_base_weights(args.out, config, params, meta)
    print(
        json.dumps(
            {
                "out": str(out),
                "bytes": out.stat().st_size,
                **{k: meta[k] for k in ("seed", "seconds")},
                "final_loss": meta["epoch_losses"][-1],
            }
        )
    )


if __name__ == "__main__":
    main()
