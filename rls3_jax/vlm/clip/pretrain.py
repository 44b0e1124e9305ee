"""Base weights of the embedded default CLIP: contrastive pre-training on *naming* the objects of the
training scenes ("a blender, a plate and a yellow bowl", objects in random order), plus an auxiliary linear
head, discarded afterwards, that reads each present object's place in the image (column, row, inverse
distance) from the image embedding. No spatial word is ever seen.

Like the paper's pretrained VLMs, the result sees the objects and where they lie in the picture, but has not
been taught spatial relations or their words; that skill must come from the RLS3 loop. The position head
is there because a naming-only tower pools the objects' places away: a probe then cannot read the
relations from its embedding at all, let alone a text tower after a few hundred samples (docs/clip.md).
Reproduce the shipped file with

    python -m rls3_jax.vlm.clip.pretrain --seed 0 --out rls3_jax/assets/clip_base.safetensors

which writes the safetensors (transformers' parameter names) and a JSON beside it (config, tokenizer
words, how it was made).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import jax
import numpy as np
from safetensors.numpy import save_file

from rls3_jax.vlm.clip import contrastive
from rls3_jax.vlm.clip import model as clip_model
from rls3_jax.vlm.clip.learner import default_config
from rls3_jax.vlm.clip.tokenizer import WORDS, ClipWordTokenizer
from rls3_jax.vlm.clip.weights import flax_to_hf, hf_name, param_paths


def object_list_caption(names, rng: np.random.Generator, scene: str | None = None) -> str:
    """'a blender, a plate and a yellow bowl in the kitchen' with the objects in a random order.

    The scene name gives contrastive training an easy first signal (images of one scene look alike), so
    the towers leave the collapsed start before they learn the small objects."""
    names = [names[i] for i in rng.permutation(len(names))]
    text = ", ".join(f"a {n}" for n in names[:-1]) + f" and a {names[-1]}"
    return text if scene is None else f"{text} in the {scene}"


def save_base_weights(out: Path, config, params, meta: dict) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        hf_name(p): np.array(flax_to_hf(p, np.asarray(v, np.float32)), order="C") for p, v in param_paths(params)
    }
    save_file(tensors, str(out), metadata={"format": "pt"})
    with open(out.with_suffix(".json"), "w") as f:
        json.dump({"config": config.to_hf_config(), "words": list(WORDS), **meta}, f, indent=1)
    return out


POSITION_WEIGHT = 1.0  # weight of the position head's loss next to the naming loss


def image_positions(metadatas, image_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Each catalogue object's (column, row, 1 / distance) in the rendered image [N, K, 3] and whether it
    is in the sample [N, K] (K = catalogue size; absent objects are zeros)."""
    from sim import OBJECT_NAMES
    from sim.render import view
    from sim.scenes import SCENES

    places = np.zeros((len(metadatas), len(OBJECT_NAMES), 3), np.float32)
    present = np.zeros((len(metadatas), len(OBJECT_NAMES)), np.float32)
    for n, m in enumerate(metadatas):
        camera = view(SCENES[m["scene"]], image_size, image_size)
        for obj in m["objects"]:
            row, column, distance = camera.project(obj["position"])
            k = OBJECT_NAMES.index(obj["name"])
            places[n, k], present[n, k] = (column, row, 1.0 / distance), 1.0
    return places, present


def _places_array(metadatas, object_places) -> tuple[np.ndarray, np.ndarray]:
    """`image_positions`' arrays from per-sample (column, row, 1 / distance) lists (`sim.augment`)."""
    from sim import OBJECT_NAMES

    places = np.zeros((len(metadatas), len(OBJECT_NAMES), 3), np.float32)
    present = np.zeros((len(metadatas), len(OBJECT_NAMES)), np.float32)
    for n, (m, where) in enumerate(zip(metadatas, object_places)):
        for obj, place in zip(m["objects"], where):
            k = OBJECT_NAMES.index(obj["name"])
            places[n, k], present[n, k] = place, 1.0
    return places, present


def _position_error(head, image_embeds, places, present):
    """Per-axis squared error summed over present objects, and their count: [3], ()."""
    dim = image_embeds.shape[-1]
    predicted = (image_embeds * dim**0.5) @ head["kernel"] + head["bias"]
    error = (predicted.reshape(places.shape) - places) ** 2 * present[..., None]
    return error.sum((0, 1)), present.sum()


def make_pretrain_step(model, optimizer, position_weight: float = POSITION_WEIGHT):
    """Jitted `(state, batch) -> (state, (naming_loss, position_loss))` over {"clip", "head"} parameters."""
    import jax.numpy as jnp
    import optax

    def loss_fn(params, batch):
        pixels = contrastive.to_pixel_values(batch["images"])
        out = model.apply({"params": params["clip"]}, input_ids=batch["input_ids"], pixel_values=pixels,
                          attention_mask=batch["attention_mask"])
        scale = jnp.exp(jnp.minimum(params["clip"]["logit_scale"], contrastive.MAX_LOGIT_SCALE))
        naming, _ = contrastive.contrastive_loss(scale * out.image_embeds @ out.text_embeds.T)
        error, count = _position_error(params["head"], out.image_embeds, batch["places"], batch["present"])
        position = error.sum() / (3 * count)
        return naming + position_weight * position, (naming, position)

    def step(state, batch):
        (_, losses), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch)
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        return {"params": optax.apply_updates(state["params"], updates), "opt": opt}, losses

    return jax.jit(step, donate_argnums=0)


def _training_data(seed: int, samples: int, size: int, augment: bool, jitter: dict | None):
    """Renders, object names, room names, standardised image places [n, objects, 3], presence and the
    standardisation (mean, std): each axis over the present objects, so that the three weigh alike."""
    import sim  # the simulator renders the training scenes

    if augment:
        from sim.augment import generate_augmented_samples

        images, metadatas, object_places = generate_augmented_samples(samples, seed, size, **(jitter or {}))
        places, present = _places_array(metadatas, object_places)
    else:
        images, metadatas = sim.generate_samples("train", samples, seed, image_size=size)
        places, present = image_positions(metadatas, size)
    names = [[o["name"] for o in m["objects"]] for m in metadatas]
    scenes = [m["scene_name"] for m in metadatas]
    mean = (places * present[..., None]).sum((0, 1)) / present.sum()
    std = np.sqrt((((places - mean) ** 2) * present[..., None]).sum((0, 1)) / present.sum())
    places = (places - mean) / std * present[..., None]
    return images, names, scenes, places, present, (mean, std)


def _optimizer(train_config, head_lr_factor: float):
    """The towers' AdamW; the linear head starts at zero, and at the towers' learning rate Adam needs thousands
    of steps to grow it, so it may learn head_lr_factor times faster."""
    import optax

    if head_lr_factor == 1.0:
        return contrastive.make_optimizer(train_config)
    faster = dataclasses.replace(train_config, learning_rate=train_config.learning_rate * head_lr_factor)
    return optax.multi_transform(
        {"clip": contrastive.make_optimizer(train_config), "head": contrastive.make_optimizer(faster)},
        {"clip": "clip", "head": "head"},
    )


def _epochs(step, state, data, tokenizer, epochs, batch_size, seed, augment, photometric_strength, log, start):
    """Runs the epochs: (state, naming losses, position losses) per epoch."""
    images, names, scenes, places, present = data
    import jax.numpy as jnp

    samples = len(names)
    steps_per_epoch = samples // batch_size
    device_images = None if augment else jnp.asarray(images)
    rng = np.random.default_rng(seed)
    photo_rng = np.random.default_rng([seed, 1])
    losses, position_losses = [], []
    for epoch in range(epochs):
        order = rng.permutation(samples)
        epoch_losses = []
        for s in range(steps_per_epoch):
            idx = order[s * batch_size : (s + 1) * batch_size]
            ids, mask = tokenizer.encode([object_list_caption(names[i], rng, scenes[i]) for i in idx])
            if augment:
                from sim.augment import photometric

                batch_images = photometric(images[idx], photo_rng, photometric_strength)
            else:
                batch_images = device_images[idx]
            batch = {"images": batch_images, "input_ids": ids, "attention_mask": mask,
                     "places": places[idx], "present": present[idx]}
            state, step_losses = step(state, batch)
            epoch_losses.append(step_losses)
        naming, position = np.mean(np.asarray(jax.device_get(epoch_losses), np.float64), axis=0)
        losses.append(float(naming))
        position_losses.append(float(position))
        contrastive.check_finite(losses[-1] + position_losses[-1], f"pre-training epoch {epoch}")
        log(f"epoch {epoch}: naming loss {naming:.3f}, position loss {position:.3f} ({time.time() - start:.0f} s)")
    return state, losses, position_losses


def pretrain(
    seed: int = 0,
    samples: int = 8000,
    epochs: int = 30,
    batch_size: int = 64,
    learning_rate: float = 5e-4,
    log=print,
    augment: bool = False,
    position_weight: float = POSITION_WEIGHT,
    init: Path | None = None,
    jitter: dict | None = None,
    photometric_strength: float = 1.0,
    head_lr_factor: float = 1.0,
):
    """(config, params, meta) after pre-training on sim's train split: contrastive object naming plus the
    position head (the head is not returned).

    augment: render varied copies of the training rooms (`sim.augment`: camera poses orbited around the
    furniture, mirrored rooms, other wall / floor / furniture colours) and vary each batch's brightness,
    contrast and colour balance, meant to make naming and localisation hold in rooms pre-training never saw
    (measured in docs/clip.md: in the budgets tried it does not; the shipped file is made without it)."""
    import jax.numpy as jnp

    from sim import OBJECT_NAMES

    start = time.time()
    tokenizer = ClipWordTokenizer(WORDS, max_length=default_config(1).text.max_position_embeddings)
    config = default_config(tokenizer.vocab_size)
    size = config.vision.image_size
    images, names, scenes, places, present, (mean, std) = _training_data(seed, samples, size, augment, jitter)
    log(f"rendered {samples} training-scene images at {size} px in {time.time() - start:.0f} s")
    train_config = contrastive.TrainConfig(
        learning_rate=learning_rate, warmup_steps=50, decay_steps=epochs * (samples // batch_size),
        end_learning_rate_factor=0.05, weight_decay=0.05,
    )
    optimizer = _optimizer(train_config, head_lr_factor)
    model = clip_model.CLIPModel(config)
    head_outputs = 3 * len(OBJECT_NAMES)
    params = {
        "clip": clip_model.init_params(config, seed) if init is None else _load_clip(init, config),
        "head": {"kernel": jnp.zeros((config.projection_dim, head_outputs)), "bias": jnp.zeros((head_outputs,))},
    }
    state = {"params": params, "opt": optimizer.init(params)}
    step = make_pretrain_step(model, optimizer, position_weight)
    state, losses, position_losses = _epochs(step, state, (images, names, scenes, places, present), tokenizer,
                                             epochs, batch_size, seed, augment, photometric_strength, log, start)
    meta = {
        "seed": seed, "samples": samples, "epochs": epochs, "batch_size": batch_size, "learning_rate": learning_rate,
        "task": "contrastive object naming plus a discarded linear head reading each object's image column, "
        "row and inverse distance from the image embedding, on sim train-split renders (no spatial words)",
        "epoch_losses": losses, "epoch_position_losses": position_losses, "augment": augment,
        "jitter": (jitter or {}) if augment else {},
        "photometric_strength": photometric_strength if augment else 0.0,
        "init": None if init is None else str(init), "head_lr_factor": head_lr_factor,
        "position_weight": position_weight,
        "val_position_r2": position_r2(model, state["params"], size, mean, std),
        "test_position_r2": position_r2(model, state["params"], size, mean, std, split="test"),
        "seconds": round(time.time() - start, 1),
    }
    return config, jax.device_get(state["params"]["clip"]), meta


def _load_clip(path: Path, config):
    """CLIP parameters of another base file (same config) to start from."""
    from rls3_jax.vlm.clip.learner import load_base_weights

    loaded, params, words = load_base_weights(Path(path))
    if loaded.to_hf_config() != config.to_hf_config() or list(words) != list(WORDS):
        raise ValueError(f"{path}: another model configuration or vocabulary than the embedded default's")
    return params


def position_r2(model, params, image_size: int, mean, std, samples: int = 512, seed: int = 5,
                split: str = "val") -> list[float]:
    """R^2 of the position head on `split` renders, per axis (column, row, inverse distance)."""
    import sim

    images, metadatas = sim.generate_samples(split, samples, seed, image_size=image_size)
    places, present = image_positions(metadatas, image_size)
    places = (places - mean) / std * present[..., None]
    embeds = model.apply({"params": params["clip"]}, contrastive.to_pixel_values(images),
                         method=clip_model.CLIPModel.get_image_features)
    embeds = embeds / np.linalg.norm(embeds, axis=-1, keepdims=True)
    error, _ = _position_error(params["head"], embeds, places, present)
    total = ((places**2) * present[..., None]).sum((0, 1))
    return [round(float(v), 3) for v in 1.0 - np.asarray(error) / total]


def pair_samples(metadatas, seed: int) -> list[dict]:
    """One random (located, reference) pair per scene, described by the prompt generator."""
    from rls3_jax.prompts import describe_pair

    rng = np.random.default_rng(seed)
    out = []
    for m in metadatas:
        i, j = rng.choice(len(m["objects"]), 2, replace=False)
        out.append(describe_pair(m, int(i), int(j)))
    return out


def naming_accuracy(learner, state, images, metadatas, seed: int) -> float:
    """Fraction of images whose pre-training caption outscores the 3 captions with one object replaced
    (chance 1/4)."""
    from sim.objects import OBJECT_NAMES

    rng = np.random.default_rng(seed)
    params = state["params"]
    image_embeds = learner.image_embeddings(params, images)
    texts = []
    for m in metadatas:
        names, scene = [o["name"] for o in m["objects"]], m["scene_name"]
        texts.append(object_list_caption(names, rng, scene))
        for slot in range(3):
            other = [n for n in OBJECT_NAMES if n not in names]
            wrong = list(names)
            wrong[slot] = other[rng.integers(len(other))]
            texts.append(object_list_caption(wrong, rng, scene))
    text_embeds = learner.text_embeddings(params, texts)
    scores = np.einsum("nd,nkd->nk", image_embeds, text_embeds.reshape(len(images), 4, -1))
    return float(np.mean(scores[:, 0] > scores[:, 1:].max(axis=1)))


def evaluate_base(path: Path, samples: int = 300, seed: int = 1) -> dict:
    """Spatial accuracy (caption vs its two hard negatives, chance 1/3) on the test split and object-naming
    accuracy on the val split, for the base weights at `path`."""
    import sim
    from rls3_jax.vlm.clip.learner import ClipLearner

    learner = ClipLearner.create(base_weights=path)
    state = learner.init_state(0)
    images, metadatas = sim.generate_samples("test", samples, seed, image_size=learner.image_size)
    spatial = learner.evaluate(state, images, pair_samples(metadatas, seed))
    val_images, val_meta = sim.generate_samples("val", samples, seed, image_size=learner.image_size)
    return {
        "test_spatial_accuracy": spatial["metric"],
        "test_spatial_per_term": spatial["per_term"],
        "test_spatial_per_complexity": {str(k): v for k, v in spatial["per_complexity"].items()},
        "val_naming_accuracy": naming_accuracy(learner, state, val_images, val_meta, seed),
        "eval_samples": samples,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("rls3_jax/assets/clip_base.safetensors"))
    parser.add_argument("--samples", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=5e-4)
    parser.add_argument("--position-weight", type=float, default=POSITION_WEIGHT)
    parser.add_argument("--augment", action="store_true",
                        help="pre-train on varied copies of the training rooms (sim.augment; measured, not shipped)")
    parser.add_argument("--yaw", type=float, default=35.0, help="camera orbit range, degrees (augment)")
    parser.add_argument("--colour", type=float, default=0.35, help="colour jitter strength (augment)")
    parser.add_argument("--photometric", type=float, default=1.0, help="photometric jitter strength (augment)")
    parser.add_argument("--per-variant", type=int, default=8, help="samples per scene variant (augment)")
    parser.add_argument("--head-lr-factor", type=float, default=1.0, help="position head's lr / the towers'")
    parser.add_argument("--init", type=Path, default=None, help="start from this base file instead of a random init")
    args = parser.parse_args(argv)
    config, params, meta = pretrain(args.seed, args.samples, args.epochs, args.batch_size, args.learning_rate,
                                    augment=args.augment, position_weight=args.position_weight, init=args.init,
                                    jitter={"yaw_deg": args.yaw, "colour": args.colour, "per_variant": args.per_variant},
                                    photometric_strength=args.photometric, head_lr_factor=args.head_lr_factor)
    out = save_base_weights(args.out, config, params, meta)
    meta.update(evaluate_base(out))
    save_base_weights(args.out, config, params, meta)
    print(
        json.dumps(
            {
                "out": str(out),
                "bytes": out.stat().st_size,
                **{k: v for k, v in meta.items() if k != "epoch_losses"},
            }
        )
    )


if __name__ == "__main__":
    main()
