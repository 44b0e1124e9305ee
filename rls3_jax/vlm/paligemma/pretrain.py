"""Base weights of the embedded PaliGemma default: it names and detects the objects, never relates them.

    python -m rls3_jax.vlm.paligemma.pretrain --seed 0 --location-frequencies 2 --frozen-locations \
        --pairs-per-image 6 --vision-out stage1/paligemma_stage1.safetensors --out rls3_jax/assets/paligemma_base.safetensors

(the shipped base: 96 px renders in 8 px patches, 2 x 2 merged per image token; location-token embeddings that
keep the bin's order and every ordered pair of objects detected at once; docs/paligemma.md) trains the small PaliGemma-architecture model from a random init on train-split renders of the simulator, in
what real PaliGemma knows before RLS3 fine-tunes it: naming the objects in an image ("Which objects are in the
image?" -> "a blender, a plate and a yellow bowl") and detecting one in PaliGemma's own format ("detect cup" ->
"<loc0412><loc0233><loc0530><loc0310> cup", rls3_jax.vlm.paligemma.detection). No caption, question or answer of it holds
a spatial word. Two stages:

1. the SigLIP tower and the projector learn where each object is: a throw-away per-token head scores every
   object on every image token; pooled over tokens it says which objects are present, as a distribution over
   tokens it says where (cross-entropy against a Gaussian around the object's projected centre), and a second
   head reads the object's distance from the camera at those tokens. A from-scratch ViT finds the 6-12 px
   objects far sooner with this direct signal than from the language model's loss alone.
2. the language model learns the two questions; location tokens are trained against a Gaussian over
   neighbouring bins (they are ordered values, not unrelated words) and start from smooth embeddings: a random
   projection of the lowest sinusoids of the bin (`--location-frequencies`), kept fixed with
   `--frozen-locations`, so that a later fine-tune can read an order from them that holds in rooms it has not
   seen.

Every render is photometrically jittered (brightness, colour balance, contrast, noise) so that what is learned
does not hang on the five training rooms' colours (--procedural P: a share P of the scene variants are
procedural rooms, sim.augment.random_room; measured worse at the shipped step budget, docs/paligemma.md; nor were
--per-variant N, a new scene variant every N renders instead of 12, and --zoom Z, stage 1's batches zoomed and
shifted at random, better on validation).
Writes the weights (safetensors) and a JSON next to them (config, vocabulary, the run's settings and its
naming / detection / spatial scores on val, proxy and test renders). Deterministic under --seed.
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
from rls3_jax.vlm.paligemma import detection
from rls3_jax.vlm.paligemma import learner as paligemma_learner
from rls3_jax.vlm.paligemma.inputs import (
    ImageSpec,
    WordPrompts,
    preprocess_images,
    sequence_length,
    training_batch,
)
from rls3_jax.vlm.paligemma.model import init_params, unmerge_tokens
from rls3_jax.vlm.paligemma.tokenizer import WordTokenizer

NAMING_QUESTION = "Which objects are in the image?"
# sim.augment.jitter_scene's settings for the shipped base, spelled out so that the base stays reproducible.
SCENE_JITTER = dict(yaw_deg=35.0, height=0.2, angle_deg=2.0, mirror=0.5, colour=0.35)


def naming_answer(names, catalogue) -> str:
    """'a blender, a plate and a yellow bowl' (catalogue order, so the answer depends on the set only)."""
    ordered = sorted(names, key=catalogue.index)
    phrases = [("an " if n[0] in "aeiou" else "a ") + n for n in ordered]
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def jitter(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Photometric jitter per image: brightness, per-channel gain, contrast and a little noise (uint8 out)."""
    n = len(images)
    x = images.astype(np.float32)
    mean = x.mean(axis=(1, 2, 3), keepdims=True)
    contrast = rng.uniform(0.75, 1.25, (n, 1, 1, 1))
    gain = rng.uniform(0.75, 1.25, (n, 1, 1, 1)) * rng.uniform(0.85, 1.15, (n, 1, 1, 3))
    x = ((x - mean) * contrast + mean) * gain + rng.normal(0.0, 4.0, x.shape)
    return np.clip(x, 0, 255).astype(np.uint8)


def vision_targets(metadata, catalogue, grid: int, sigma: float = 0.6):
    """Per sample and catalogue object: presence [n, O], token heat-map [n, O, grid*grid] (a Gaussian of
    `sigma` cells around the projected centre, rows sum to 1 where present) and log distance [n, O]."""
    n, n_obj = len(metadata), len(catalogue)
    presence = np.zeros((n, n_obj), np.float32)
    heat = np.zeros((n, n_obj, grid * grid), np.float32)
    depth = np.zeros((n, n_obj), np.float32)
    cells = (np.arange(grid) + 0.5) / grid
    for i, m in enumerate(metadata):
        centres = detection.project(m, [o["position"] for o in m["objects"]])
        for o, (row, col, z) in zip(m["objects"], centres):
            k = catalogue.index(o["name"])
            g = np.exp(-(((cells[:, None] - row) ** 2 + (cells[None, :] - col) ** 2) * grid**2) / (2 * sigma**2))
            presence[i, k], heat[i, k], depth[i, k] = 1.0, (g / g.sum()).ravel(), math.log(z)
    return presence, heat, depth


def object_centres(metadata, catalogue) -> np.ndarray:
    """[n, O, 2] projected (row, column) of every catalogue object in [0, 1] of the image (0 where absent)."""
    centres = np.zeros((len(metadata), len(catalogue), 2), np.float32)
    for i, m in enumerate(metadata):
        for o, (row, col, _) in zip(m["objects"], detection.project(m, [o["position"] for o in m["objects"]])):
            centres[i, catalogue.index(o["name"])] = row, col
    return centres


def zoomed_batch(pixels, presence, centres, key, zoom: float, grid: int, sigma: float = 0.6):
    """A random zoom and shift of each image and its targets (stage 1 only): scale f in [1 / (1 + zoom), 1 + zoom]
    (log-uniform; above 1 a crop, below 1 the image placed inside a grey frame), shifted anywhere the image still
    covers (f > 1) or stays inside (f < 1) the frame. Objects moved out of the frame are absent; an object seen f
    times larger is as if f times nearer (log f off its log distance). The tower then cannot tie a place to where
    the training rooms' tables stand in the frame. pixels [B, 3, H, W] normalised; returns (pixels, presence,
    heat, log f)."""
    b, size = pixels.shape[0], pixels.shape[-1]
    scale_key, shift_key = jax.random.split(key)
    f = jnp.exp(jax.random.uniform(scale_key, (b,), minval=-1.0, maxval=1.0) * jnp.log1p(zoom))
    shift = jax.random.uniform(shift_key, (b, 2)) * (1.0 - f)[:, None]  # in image fractions

    def move(image, f, t):  # zero outside the source: mid-grey after normalisation
        return jax.image.scale_and_translate(image, image.shape, (1, 2), jnp.stack([f, f]), t * size, "linear")

    pixels = jax.vmap(move)(pixels, f, shift)
    centres = centres * f[:, None, None] + shift[:, None, :]
    inside = jnp.all((centres >= 0.0) & (centres < 1.0), axis=-1)
    presence = presence * inside
    # vision_targets' heat maps, on device (that numpy copy stays: the shipped base is reproduced from it bit for bit)
    cells = (jnp.arange(grid) + 0.5) / grid
    d2 = (cells[:, None] - centres[..., 0, None, None]) ** 2 + (cells[None, :] - centres[..., 1, None, None]) ** 2
    g = jnp.exp(-d2 * grid**2 / (2 * sigma**2)).reshape(*centres.shape[:2], grid * grid)
    # far outside the frame g underflows to zero: absent objects get no heat, never 0 / 0
    heat = jnp.where(presence[..., None] > 0, g / jnp.maximum(g.sum(-1, keepdims=True), 1e-30), 0.0)
    return pixels, presence, heat, jnp.log(f)


def _vision_loss(model, rest, trainable, pixels, presence, heat, depth):
    tokens = model.apply({"params": {**rest, **trainable}}, pixels, method=model.embed_image)
    # With merged image tokens each token scores the k x k patches it holds: the targets stay per patch.
    per_patch = lambda head: unmerge_tokens(tokens @ head["kernel"] + head["bias"], model.config.image_token_merge)
    logits = per_patch(trainable["head"])  # [B, patches, objects]
    pooled = jax.nn.logsumexp(logits, axis=1) - jnp.log(logits.shape[1])
    present = optax.sigmoid_binary_cross_entropy(pooled, presence).mean()
    where_logp = jax.nn.log_softmax(logits, axis=1).transpose(0, 2, 1)  # [B, objects, patches]
    where = -(heat * where_logp).sum(-1)
    distance = per_patch(trainable["depth"])  # [B, patches, objects]
    how_far = (heat * (distance.transpose(0, 2, 1) - depth[..., None]) ** 2).sum(-1)
    count = jnp.maximum(presence.sum(), 1.0)
    return present + ((where + how_far) * presence).sum() / count


def pretrain_vision(model, params, pixels, targets, steps: int, batch_size: int, learning_rate: float, key,
                    zoom: float = 0.0, centres=None):
    """Stage 1: the SigLIP tower and the projector learn which objects are where (heads discarded). zoom > 0:
    every batch randomly zoomed and shifted (`zoomed_batch`, needs the objects' `centres`)."""
    presence, heat, depth = (jnp.asarray(t) for t in targets)
    depth_mean, depth_std = float(depth[presence > 0].mean()), float(depth[presence > 0].std())
    depth = (depth - depth_mean) / depth_std
    grid = model.config.vision.image_size // model.config.vision.patch_size
    data = (pixels, presence, heat, depth, None if centres is None else jnp.asarray(centres))
    width, outputs = model.config.text.hidden_size, presence.shape[1] * model.config.image_token_merge**2
    head = lambda: {"kernel": jnp.zeros((width, outputs)), "bias": jnp.zeros((outputs,))}
    trainable = {"vision_tower": params["vision_tower"], "multi_modal_projector": params["multi_modal_projector"],
                 "head": head(), "depth": head()}
    rest = {k: v for k, v in params.items() if k not in trainable}
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(steps // 20, 1), steps, learning_rate * 0.05)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule))

    def batch(data, idx, zoom_key):
        pixels, presence, heat, depth, centres = data
        if zoom <= 0:
            return pixels[idx], presence[idx], heat[idx], depth[idx]
        moved, seen, heat, log_f = zoomed_batch(pixels[idx], presence[idx], centres[idx], zoom_key, zoom, grid)
        return moved, seen, heat, depth[idx] - log_f[:, None] / depth_std

    @jax.jit  # the data is an argument: a constant this size would take XLA minutes to compile in
    def step(trainable, opt, data, idx, zoom_key):
        loss, grads = jax.value_and_grad(lambda t: _vision_loss(model, rest, t, *batch(data, idx, zoom_key)))(trainable)
        updates, opt = tx.update(grads, opt, trainable)
        return optax.apply_updates(trainable, updates), opt, loss

    opt, losses = tx.init(trainable), []
    for step_key in jax.random.split(key, steps):
        idx = jax.random.randint(step_key, (batch_size,), 0, len(presence))
        trainable, opt, loss = step(trainable, opt, data, idx, jax.random.fold_in(step_key, 1))
        losses.append(loss)
        if len(losses) % 250 == 0:
            print(f"vision step {len(losses)}: loss {float(np.mean(jax.device_get(losses[-50:]))):.3f}", flush=True)
    return {**params, "vision_tower": trainable["vision_tower"],
            "multi_modal_projector": trainable["multi_modal_projector"]}, [float(x) for x in jax.device_get(losses)]


def smooth_location_embeddings(params, tokenizer: WordTokenizer, seed: int, frequencies: int = 16):
    """Location-token embeddings as a random projection of sinusoids of the bin (the lowest `frequencies`
    multiples of pi): neighbouring bins start close."""
    table = np.asarray(params["language_model"]["embed_tokens"]["embedding"]).copy()
    first = tokenizer.ids[detection.LOC_TOKENS[0]]
    bins = np.arange(detection.LOC_BINS)[:, None] / detection.LOC_BINS
    freqs = np.arange(1, frequencies + 1)[None, :] * np.pi
    features = np.concatenate([np.sin(bins * freqs), np.cos(bins * freqs)], axis=1)  # [1024, 32]
    proj = np.random.default_rng(seed).normal(0.0, 1.0, (features.shape[1], table.shape[1]))
    loc = features @ proj
    loc *= table.std() / loc.std()
    table[first:first + detection.LOC_BINS] = loc
    lm = {**params["language_model"], "embed_tokens": {"embedding": jnp.asarray(table)}}
    return {**params, "language_model": lm}


def object_pairs(n_objects: int, count: int, rng: np.random.Generator):
    """`count` distinct ordered pairs of object indices, drawn at random (one pair: the first two of a
    permutation, the shipped base's draw)."""
    if count == 1:
        return [tuple(rng.permutation(n_objects)[:2])]
    ordered = [(a, b) for a in range(n_objects) for b in range(n_objects) if a != b]
    return [ordered[j] for j in rng.permutation(len(ordered))[:count]]


def language_examples(metadata, catalogue, seed: int, pairs_per_image: int = 1):
    """(image index, question, answer) for every image: the naming question, one detection per object and
    `pairs_per_image` of two objects at once ("detect cup ; plate", PaliGemma's multi-object form: boxes in the
    order asked)."""
    rng = np.random.default_rng(seed)
    out = []
    for i, m in enumerate(metadata):
        out.append((i, NAMING_QUESTION, naming_answer([o["name"] for o in m["objects"]], catalogue)))
        for k, o in enumerate(m["objects"]):
            out.append((i, detection.detect_prompt(o["name"]), detection.detect_answer(m, k)))
        for first, second in object_pairs(len(m["objects"]), pairs_per_image, rng):
            names = [m["objects"][first]["name"], m["objects"][second]["name"]]
            out.append((i, detection.detect_prompt(" ; ".join(names)),
                        detection.detect_answer(m, first) + " ; " + detection.detect_answer(m, second)))
    return out


def soft_answer_loss(model, params, batch, loc_first: int, sigma_bins: float):
    """Answer-token cross-entropy; a location token's target is a Gaussian over the bins around it."""
    logits = model.apply({"params": params}, input_ids=batch["input_ids"], image_features=batch["image_tokens"],
                         attention_mask=batch["attention_mask"], token_type_ids=batch["token_type_ids"]).logits
    logp = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    targets = batch["input_ids"][:, 1:]
    weight = ((batch["token_type_ids"][:, 1:] == 1) & (batch["attention_mask"][:, 1:] == 1)).astype(jnp.float32)
    hard = -jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]
    bins = targets - loc_first
    is_loc = (bins >= 0) & (bins < detection.LOC_BINS)
    grid = jnp.arange(detection.LOC_BINS)
    soft_target = jax.nn.softmax(-((grid - bins[..., None]) ** 2) / (2 * sigma_bins**2), axis=-1)
    soft = -(soft_target * logp[..., loc_first:loc_first + detection.LOC_BINS]).sum(-1)
    nll = jnp.where(is_loc, soft, hard)
    return (nll * weight).sum() / jnp.maximum(weight.sum(), 1.0)


def image_tokens_of(model, params, pixels, chunk: int = 256):
    """[n, image tokens, width] through the (frozen) vision tower and projector, in chunks."""
    embed = jax.jit(lambda p, x: model.apply({"params": p}, x, method=model.embed_image))
    return jnp.concatenate([embed(params, pixels[i:i + chunk]) for i in range(0, len(pixels), chunk)])


def pretrain_language(model, params, pixels, examples, prompts, steps, batch_size, learning_rate, key, sigma_bins,
                      frozen_locations: bool = False):
    """Stage 2: the language model learns naming and detection; the vision tower and projector stay as they
    come in (stage 1's, or `--vision-from`'s tower), so the image tokens are computed once. frozen_locations: the location tokens' embeddings keep
    their starting values (restored after every update, AdamW's decay included)."""
    image_index = jnp.asarray([e[0] for e in examples], jnp.int32)
    questions, answers = [e[1] for e in examples], [e[2] for e in examples]
    length = sequence_length(prompts, model.config.num_image_tokens, questions, answers)
    text = {k: jnp.asarray(v) for k, v in training_batch(prompts, model.config.num_image_tokens, questions, answers,
                                                         length).items()}
    loc_first = prompts.tokenizer.ids[detection.LOC_TOKENS[0]]
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, max(steps // 20, 1), steps, learning_rate * 0.05)
    tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(schedule))
    vision = params["vision_tower"]
    tower_tokens = image_tokens_of(model, params, pixels)
    language = {k: v for k, v in params.items() if k != "vision_tower"}
    rows = slice(loc_first, loc_first + detection.LOC_BINS)
    locations = language["language_model"]["embed_tokens"]["embedding"][rows]

    # The image tokens are an argument, not a constant of the step: a 151 MB constant took a trivial jitted gather
    # 7 s to compile on the 2-core CPU, against 0.1 s as an argument (the same weights come out either way).
    @jax.jit
    def step(language, opt, text, image_index, tower_tokens, idx):
        batch = {k: v[idx] for k, v in text.items()}
        batch["image_tokens"] = tower_tokens[image_index[idx]]
        loss, grads = jax.value_and_grad(
            lambda p: soft_answer_loss(model, {**p, "vision_tower": vision}, batch, loc_first, sigma_bins))(language)
        updates, opt = tx.update(grads, opt, language)
        language = optax.apply_updates(language, updates)
        if frozen_locations:
            table = language["language_model"]["embed_tokens"]["embedding"].at[rows].set(locations)
            language = {**language, "language_model": {**language["language_model"], "embed_tokens": {"embedding": table}}}
        return language, opt, loss

    opt, losses = tx.init(language), []
    for i, step_key in enumerate(jax.random.split(key, steps)):
        idx = jax.random.randint(step_key, (batch_size,), 0, len(examples))
        language, opt, loss = step(language, opt, text, image_index, tower_tokens, idx)
        losses.append(loss)
        if (i + 1) % 250 == 0:
            print(f"language step {i + 1}: loss {float(np.mean(jax.device_get(losses[-50:]))):.3f}", flush=True)
    return {**language, "vision_tower": vision}, [float(x) for x in jax.device_get(losses)]


def _stage1_from(path: Path, config, params):
    """(params with `path`'s vision tower, what its JSON says of how it was made). With one patch per image token
    the projector stays at this run's init (the shipped base's recipe: stage 2 never trains it); with merged tokens
    it is taken too, as a random k*k*width -> width projector would drop most of what the tower found."""
    base_config, base_params, _, base_info = paligemma_learner.load_base(path, path.with_suffix(".json"))
    if (base_config.vision != config.vision or base_config.text.hidden_size != config.text.hidden_size
            or base_config.image_token_merge != config.image_token_merge):
        raise ValueError(f"--vision-from {path}: its vision tower ({base_config.vision}, image token merge "
                         f"{base_config.image_token_merge}) does not fit this config ({config.vision}, text width "
                         f"{config.text.hidden_size}, image token merge {config.image_token_merge})")
    taken = ("vision_tower",) + (("multi_modal_projector",) if config.image_token_merge > 1 else ())
    parts = {k: jax.tree.map(jnp.asarray, base_params[k]) for k in taken}
    keys = ("vision_steps", "vision_batch_size", "vision_learning_rate", "vision_final_loss", "vision_seconds")
    return {**params, **parts}, {"vision_from": str(path), **{k: base_info[k] for k in keys if k in base_info}}


def pretrain(seed=0, n_train=8192, vision_steps=8000, vision_batch_size=32, vision_learning_rate=1e-3,
             steps=4000, batch_size=16, learning_rate=1e-3, sigma_bins=12.0, per_variant=12, procedural=0.0,
             image_size=paligemma_learner.EMBEDDED_IMAGE_SIZE, patch_size=paligemma_learner.EMBEDDED_PATCH_SIZE,
             location_frequencies=16, frozen_locations=False, vision_from: Path | None = None, pairs_per_image=1,
             image_token_merge=paligemma_learner.EMBEDDED_IMAGE_TOKEN_MERGE, vision_out: Path | None = None,
             zoom=0.0, vision_layers=paligemma_learner.EMBEDDED_VISION_LAYERS):
    """(config, params, tokenizer, info): stage 1 (`pretrain_vision`), then stage 2 (`pretrain_language`).
    vision_from: a base file whose vision tower stands in for stage 1's (which is then skipped). vision_out: where
    stage 1's result is saved as a base file (its language model untrained) that a later `vision_from` can take."""
    import sim
    from sim import augment

    catalogue = list(sim.OBJECT_NAMES)
    tokenizer = WordTokenizer.for_objects(catalogue, location_tokens=True)
    config = paligemma_learner.embedded_config(len(tokenizer), image_size=image_size, patch_size=patch_size,
                                               image_token_merge=image_token_merge, vision_layers=vision_layers)
    model, params = init_params(config, seed)
    params = smooth_location_embeddings(params, tokenizer, seed, location_frequencies)
    stage1 = None if vision_from is None else _stage1_from(vision_from, config, params)
    t0 = time.time()
    # Varied copies of the training rooms (camera pose, mirror, wall/floor/furniture colours; sim.augment), a new
    # variant every `per_variant` renders of a room: what is learned cannot hang on the five rooms as they are.
    images, metadata, _ = augment.generate_augmented_samples(
        n_train, seed, config.vision.image_size, per_variant=per_variant, procedural=procedural, **SCENE_JITTER)
    images = jitter(images, np.random.default_rng(seed))
    pixels = jnp.asarray(preprocess_images(images, ImageSpec(config.vision.image_size)))
    grid = config.vision.image_size // config.vision.patch_size
    vision_key, key = jax.random.split(jax.random.key(seed))
    # How the data and stage 1 were made: in the base's JSON, and in stage 1's own file with --vision-out.
    made = {
        "seed": seed, "n_train": n_train, "per_variant": per_variant, "procedural": procedural,
        "augmentation": "sim.augment.jitter_scene variants of the training rooms"
                        + (f" and of procedural rooms ({procedural:g} of the variants)" if procedural else "")
                        + " + photometric jitter",
        "vision_steps": vision_steps, "vision_batch_size": vision_batch_size, "vision_learning_rate": vision_learning_rate,
        "vision_task": "which catalogue objects are in the image, at which tokens, how far (heads discarded)",
        "image_token_merge": image_token_merge, "vision_zoom": zoom,
    }
    t1 = time.time()
    if stage1 is None:
        centres = object_centres(metadata, catalogue) if zoom > 0 else None
        params, vision_losses = pretrain_vision(model, params, pixels, vision_targets(metadata, catalogue, grid),
                                                vision_steps, vision_batch_size, vision_learning_rate, vision_key,
                                                zoom, centres)
        vision_info = {"vision_final_loss": float(np.mean(vision_losses[-50:])), "vision_seconds": round(time.time() - t1, 1)}
        if vision_out is not None:
            paligemma_learner.save_base(vision_out, vision_out.with_suffix(".json"), params, config, tokenizer,
                                        {**made, **vision_info, "stage": "vision only"})
    else:
        params, vision_info = stage1
    t2 = time.time()
    examples = language_examples(metadata, catalogue, seed, pairs_per_image)
    params, losses = pretrain_language(model, params, pixels, examples, WordPrompts(tokenizer), steps, batch_size,
                                       learning_rate, key, sigma_bins, frozen_locations)
    info = {
        **made, **vision_info, "location_frequencies": location_frequencies, "frozen_locations": frozen_locations,
        "pairs_per_image": pairs_per_image,
        "steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "location_sigma_bins": sigma_bins,
        "task": f"{NAMING_QUESTION!r} -> objects in catalogue order; 'detect NAME' -> four <locYYYY> and NAME",
        "final_loss": float(np.mean(losses[-50:])),
        "data_seconds": round(t1 - t0, 1), "train_seconds": round(time.time() - t2, 1),
    }
    return config, params, tokenizer, info


def detection_scores(learner, state, images, metadata) -> dict:
    """Mean IoU and centre error (fraction of the image width) of 'detect NAME' over every object."""
    questions, truth = [], []
    for m in metadata:
        for k, o in enumerate(m["objects"]):
            questions.append(detection.detect_prompt(o["name"]))
            truth.append(detection.object_box(m, k))
    said = learner.answer(state, np.repeat(images, 3, axis=0), questions)
    boxes = [detection.parse_box(a) for a in said]
    ious = [detection.iou(b, t) if b is not None else 0.0 for b, t in zip(boxes, truth)]
    centre = [np.abs((b[:2] + b[2:]) / 2 - (t[:2] + t[2:]) / 2).max() if b is not None else 1.0 for b, t in zip(boxes, truth)]
    return {"mean_iou": float(np.mean(ious)), "centre_error": float(np.mean(centre)), "example": said[0]}


def pair_detection_scores(learner, state, images, metadata) -> dict:
    """Mean IoU of both boxes of 'detect A ; B' (each image's first two objects): the form a grounded answer
    states its boxes in."""
    questions = [detection.detect_prompt(m["objects"][0]["name"] + " ; " + m["objects"][1]["name"]) for m in metadata]
    ious = []
    for answer, m in zip(learner.answer(state, images, questions), metadata):
        parts = answer.split(" ; ") + ["", ""]
        for k in (0, 1):
            box = detection.parse_box(parts[k])
            ious.append(detection.iou(box, detection.object_box(m, k)) if box is not None else 0.0)
    return {"pair_mean_iou": float(np.mean(ious))}


def proxy_samples(n: int, seed: int, image_size: int):
    """Validation proxy for unseen rooms: n renders of training-room variants (SCENE_JITTER, a new variant per
    render) seeded apart from any pretraining run (1000 + seed), no photometric jitter."""
    from sim import augment

    images, metadata, _ = augment.generate_augmented_samples(n, 1000 + seed, image_size, per_variant=1, **SCENE_JITTER)
    return images, metadata


def evaluate_base(learner, seed: int, n: int = 192) -> dict:
    """Naming and detection on val (training rooms), proxy (`proxy_samples`: unseen variants of the training
    rooms) and test (unseen rooms) renders; spatial rubric on test."""
    import sim

    catalogue = list(sim.OBJECT_NAMES)
    state = learner.init_state(seed)
    out = {}
    for split, offset in (("val", 1), ("proxy", 3), ("test", 2)):
        if split == "proxy":
            images, metadata = proxy_samples(n, seed, learner.image_size)
        else:
            images, metadata = sim.generate_samples(split, n, seed + offset, image_size=learner.image_size)
        said = learner.answer(state, images, [NAMING_QUESTION] * n)
        names = [[o["name"] for o in m["objects"]] for m in metadata]
        out[f"naming_object_recall_{split}"] = float(np.mean([np.mean([x in a for x in ns]) for a, ns in zip(said, names)]))
        out[f"naming_exact_{split}"] = float(np.mean([a == naming_answer(ns, catalogue) for a, ns in zip(said, names)]))
        scores = {**detection_scores(learner, state, images, metadata),
                  **pair_detection_scores(learner, state, images, metadata)}
        for key, value in scores.items():
            out[f"detection_{key}_{split}"] = value
        if split == "test":
            spatial = learner.evaluate(state, images, [describe_pair(m, 0, 1) for m in metadata])
            out["spatial_test_mean_rubric"] = spatial["metric"]
            out["spatial_test_answer_example"] = spatial["answers"][0]
    out["naming_exact_chance"] = 1 / math.comb(len(catalogue), 3)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, default=8192)
    parser.add_argument("--vision-steps", type=int, default=8000)
    parser.add_argument("--vision-batch-size", type=int, default=32)
    parser.add_argument("--vision-learning-rate", type=float, default=1e-3)
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--per-variant", type=int, default=12,
                        help="renders of each scene variant (fewer: more variants, slower to render)")
    parser.add_argument("--zoom", type=float, default=0.0,
                        help="stage 1 only: zoom each batch's images by up to 1 + ZOOM in or out, shifted at random")
    parser.add_argument("--procedural", type=float, default=0.0,
                        help="share of the scene variants that are procedural rooms (sim.augment.random_room)")
    parser.add_argument("--image-size", type=int, default=paligemma_learner.EMBEDDED_IMAGE_SIZE, help="render size in pixels")
    parser.add_argument("--patch-size", type=int, default=paligemma_learner.EMBEDDED_PATCH_SIZE,
                        help="vision patch size in pixels")
    parser.add_argument("--location-frequencies", type=int, default=16,
                        help="sinusoid frequencies the location-token embeddings start from")
    parser.add_argument("--frozen-locations", action="store_true",
                        help="keep the location tokens' embeddings at their smooth start through stage 2")
    parser.add_argument("--vision-from", type=Path, default=None,
                        help="a base file whose vision tower replaces stage 1's")
    parser.add_argument("--pairs-per-image", type=int, default=1, choices=range(1, 7), metavar="{1..6}",
                        help="two-object detections ('detect A ; B') per image in stage 2")
    parser.add_argument("--image-token-merge", type=int, default=paligemma_learner.EMBEDDED_IMAGE_TOKEN_MERGE, metavar="K",
                        help="K x K neighbouring patch tokens as one image token for the language model")
    parser.add_argument("--vision-layers", type=int, default=paligemma_learner.EMBEDDED_VISION_LAYERS,
                        help="transformer layers of the SigLIP tower")
    parser.add_argument("--vision-out", type=Path, default=None,
                        help="also save stage 1's result here (a base file --vision-from can take)")
    parser.add_argument("--out", type=Path, default=paligemma_learner.BASE_WEIGHTS)
    args = parser.parse_args(argv)
    if args.image_size % args.patch_size:
        parser.error(f"--image-size {args.image_size} is not a multiple of --patch-size {args.patch_size}")
    if args.image_token_merge < 1 or (args.image_size // args.patch_size) % args.image_token_merge:
        parser.error(f"--image-token-merge {args.image_token_merge} does not divide the {args.image_size // args.patch_size}"
                     "-patch side of the image")
    if args.per_variant < 1 or args.zoom < 0 or args.vision_layers < 1:
        parser.error(f"--per-variant and --vision-layers must be >= 1 and --zoom >= 0, got {args.per_variant}, "
                     f"{args.vision_layers} and {args.zoom}")
    if args.vision_out is not None and args.vision_from is not None:
        parser.error("--vision-out saves stage 1, which --vision-from skips: give one of them")
    config, params, tokenizer, info = pretrain(
        args.seed, args.n_train, args.vision_steps, args.vision_batch_size, args.vision_learning_rate,
        args.steps, args.batch_size, args.learning_rate, per_variant=args.per_variant, procedural=args.procedural,
        image_size=args.image_size, patch_size=args.patch_size, location_frequencies=args.location_frequencies,
        frozen_locations=args.frozen_locations, vision_from=args.vision_from, pairs_per_image=args.pairs_per_image,
        image_token_merge=args.image_token_merge, vision_out=args.vision_out, zoom=args.zoom,
        vision_layers=args.vision_layers,
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
