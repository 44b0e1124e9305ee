"""Contrastive training and evaluation of CLIP / NegCLIP (paper Eq. 1 and section 4.3).

Text columns of a batch of N images: the N true captions first, then, for NegCLIP, the N term-swapped and
the N object-swapped hard negatives. The image->text term of Eq. 1 runs over every column (so NegCLIP's
negatives compete with the true caption); the text->image term runs over the N true captions only (a hard
negative has no matching image). Padded samples (`valid` False) drop out of both terms.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rls3_jax import prompts
from rls3_jax.vlm.clip.model import CLIPModel

MAX_LOGIT_SCALE = math.log(100.0)  # OpenAI CLIP clamps the temperature at 1/100
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _logsumexp(x, axis, xp):
    m = xp.max(x, axis=axis, keepdims=True)
    return xp.squeeze(m, axis) + xp.log(xp.sum(xp.exp(x - m), axis=axis))


def contrastive_loss(logits_per_image, valid=None, xp=jnp):
    """Eq. 1 with masking: logits [N, C*N] (column i = image i's caption) -> (mean loss, per-image loss [N]).

    Works with numpy (`xp=np`, host-side evaluation of any N) and jax.numpy (inside the jitted step).
    """
    n, columns = logits_per_image.shape
    if columns % n:
        raise ValueError(
            f"logits_per_image of shape {logits_per_image.shape}: texts are not a multiple of images"
        )
    if valid is None:
        valid = xp.ones((n,), bool)
    neg = xp.asarray(-1e9, logits_per_image.dtype)
    valid_columns = xp.tile(valid, columns // n)
    positive = xp.diagonal(logits_per_image[:, :n])
    i2t = _logsumexp(xp.where(valid_columns[None, :], logits_per_image, neg), 1, xp) - positive
    t2i = _logsumexp(xp.where(valid[:, None], logits_per_image[:, :n], neg), 0, xp) - positive
    per_image = xp.where(valid, 0.5 * (i2t + t2i), 0.0)
    return xp.sum(per_image) / xp.maximum(xp.sum(valid), 1), per_image


def hard_negative_scores(image_embeds, caption_embeds, negative_embeds):
    """Cosine scores [N, 1 + K] of each image against its caption (column 0) and its K hard negatives.

    image_embeds [N, D], caption_embeds [N, D], negative_embeds [K, N, D], all L2-normalised."""
    texts = np.concatenate([caption_embeds[None], negative_embeds], axis=0)  # [1+K, N, D]
    return np.einsum("nd,knd->nk", image_embeds, texts)


def hard_negative_correct(scores) -> np.ndarray:
    """True where the caption scores strictly above every hard negative (ARO / What'sUp accuracy)."""
    return scores[:, 0] > scores[:, 1:].max(axis=1)


def breakdown(values: np.ndarray, samples: Sequence[dict]) -> tuple[dict, dict]:
    """Mean of `values` per spatial term (samples whose truth holds the term) and per number of terms."""
    per_term, per_complexity = {}, {}
    for term in prompts.TERMS:
        picked = [v for v, s in zip(values, samples) if term in s["terms"]]
        if picked:
            per_term[term] = float(np.mean(picked))
    for count in (1, 2, 3):
        picked = [v for v, s in zip(values, samples) if len(s["terms"]) == count]
        if picked:
            per_complexity[count] = float(np.mean(picked))
    return per_term, per_complexity


def hard_negative_texts(samples: Sequence[dict], rng=None) -> tuple[list[str], list[str]]:
    """(term-swapped, object-swapped) captions. Without rng the swapped term is a fixed function of the
    caption, so evaluation is deterministic and the same across calls."""
    term_swapped, object_swapped = [], []
    for s in samples:
        terms = prompts.order_terms(s["terms"])
        if rng is None:
            index = zlib.crc32(s["caption"].encode()) % len(terms)
        else:
            index = int(rng.integers(len(terms)))
        term_swapped.append(prompts.term_swapped_caption(s["located"], s["reference"], terms, index))
        object_swapped.append(prompts.object_swapped_caption(s["located"], s["reference"], terms))
    return term_swapped, object_swapped


def to_pixel_values(images, mean=CLIP_MEAN, std=CLIP_STD, dtype=jnp.float32):
    """uint8 NHWC -> normalised float NCHW (the rescale + normalise of CLIP's processor), on device."""
    x = images.astype(jnp.float32) / 255.0
    x = (x - jnp.asarray(mean, jnp.float32)) / jnp.asarray(std, jnp.float32)
    return x.transpose(0, 3, 1, 2).astype(dtype)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    learning_rate: float = 3e-4
    warmup_steps: int = 20
    decay_steps: int = 5000  # cosine decay horizon over the whole run (the loop fine-tunes repeatedly)
    end_learning_rate_factor: float = 0.1
    weight_decay: float = 0.1
    max_grad_norm: float = 1.0
    b1: float = 0.9
    b2: float = 0.98
    eps: float = 1e-6


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """AdamW with linear warm-up and cosine decay, global-norm clipping; no decay on biases, norms, scalars."""
    schedule = optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=config.learning_rate,
        warmup_steps=config.warmup_steps,
        decay_steps=max(config.decay_steps, config.warmup_steps + 1),
        end_value=config.learning_rate * config.end_learning_rate_factor,
    )
    decay_mask = lambda params: jax.tree_util.tree_map(lambda p: p.ndim >= 2, params)
    return optax.chain(
        optax.clip_by_global_norm(config.max_grad_norm),
        optax.adamw(
            schedule,
            b1=config.b1,
            b2=config.b2,
            eps=config.eps,
            weight_decay=config.weight_decay,
            mask=decay_mask,
        ),
    )


def init_train_state(params, optimizer: optax.GradientTransformation) -> dict:
    params = jax.tree_util.tree_map(jnp.asarray, params)
    return {"params": params, "opt": optimizer.init(params), "step": jnp.zeros((), jnp.int32)}


def make_train_step(
    model: CLIPModel, optimizer: optax.GradientTransformation, mean=CLIP_MEAN, std=CLIP_STD, shardings=None,
    frozen: tuple[str, ...] = (),
):
    """Jitted `(state, batch) -> (state, metrics)`: forward, loss, backward and update in one XLA program.

    batch: "images" uint8 [N, H, W, 3] (or "vision_pooled" [N, D]), "input_ids"/"attention_mask" int32 [C*N, L] (C = 1 for CLIP,
    3 for NegCLIP, columns ordered as in the module docstring), "valid" bool [N].
    shardings: None, or (state, batch, replicated) shardings from rls3_jax.sharding: the step then runs on
    the mesh, the state staying where its shardings put it.
    frozen: top-level parameter groups (e.g. "vision_model") held constant in the loss, so that no gradient
    is computed for them; the optimiser must leave them unchanged too.
    """

    def loss_fn(params, batch):
        params = {k: jax.lax.stop_gradient(v) if k in frozen else v for k, v in params.items()}
        # A frozen tower's pooled output may come precomputed ("vision_pooled") instead of the images.
        pixels = to_pixel_values(batch["images"], mean, std, model.dtype) if "images" in batch else None
        out = model.apply(
            {"params": params},
            input_ids=batch["input_ids"],
            pixel_values=pixels,
            attention_mask=batch["attention_mask"],
            vision_pooled=batch.get("vision_pooled"),
        )
        # Recompute the logits with the clamped temperature (the forward itself keeps transformers' meaning).
        scale = jnp.exp(jnp.minimum(params["logit_scale"], MAX_LOGIT_SCALE))
        logits = scale * out.image_embeds @ out.text_embeds.T
        loss, _ = contrastive_loss(logits, batch["valid"])
        n = batch["valid"].shape[0]
        hits = (jnp.argmax(logits, axis=1) == jnp.arange(n)) & batch["valid"]
        return loss, {
            "batch_accuracy": jnp.sum(hits) / jnp.maximum(jnp.sum(batch["valid"]), 1),
            "scale": scale,
        }

    def train_step(state: dict, batch: dict[str, Any]):
        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"], batch)
        updates, opt = optimizer.update(grads, state["opt"], state["params"])
        # Frozen groups pass through unchanged instead of being rewritten with a zero update.
        params = {k: v if k in frozen else optax.apply_updates(v, updates[k]) for k, v in state["params"].items()}
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads), **aux}
        return {"params": params, "opt": opt, "step": state["step"] + 1}, metrics

    if shardings is None:
        return jax.jit(train_step, donate_argnums=0)
    state_sh, batch_sh, replicated = shardings
    return jax.jit(train_step, donate_argnums=0, in_shardings=(state_sh, batch_sh),
                   out_shardings=(state_sh, replicated))


def check_finite(loss: float, where: str) -> float:
    if not math.isfinite(loss):
        raise FloatingPointError(f"contrastive loss became {loss} at {where}")
    return loss
