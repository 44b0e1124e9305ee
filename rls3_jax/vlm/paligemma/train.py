"""PaliGemma fine-tuning: answer-token loss, the trainable/frozen split and one jitted train step.

The paper fine-tunes only the language model's attention layers: those parameters are labelled "trainable"
and the rest "frozen" (optax.multi_transform with set_to_zero, so frozen parameters carry no optimiser
state, and gradients are only taken with respect to the trainable ones). `full_finetune=True` trains all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax
from flax.traverse_util import flatten_dict, unflatten_dict

from rls3_jax.vlm.paligemma.model import PaliGemma


def param_labels(params, full_finetune: bool = False):
    """'trainable' for the Gemma attention projections (or everything), 'frozen' otherwise."""
    flat = flatten_dict(params)
    trainable = lambda path: full_finetune or (path[0] == "language_model" and "self_attn" in path)
    return unflatten_dict({p: "trainable" if trainable(p) else "frozen" for p in flat})


def make_optimizer(params, learning_rate: float, full_finetune: bool = False, weight_decay: float = 0.0):
    labels = param_labels(params, full_finetune)
    tx = optax.multi_transform(
        {
            "trainable": optax.chain(optax.clip_by_global_norm(1.0), optax.adamw(learning_rate, weight_decay=weight_decay)),
            "frozen": optax.set_to_zero(),
        },
        labels,
    )
    return tx, labels


def _split(params, labels):
    flat, flat_labels = flatten_dict(params), flatten_dict(labels)
    trainable = {p: v for p, v in flat.items() if flat_labels[p] == "trainable"}
    frozen = {p: v for p, v in flat.items() if flat_labels[p] != "trainable"}
    return trainable, frozen


def answer_nll(model: PaliGemma, params, batch):
    """Per-sample mean negative log-likelihood of the answer tokens (token type 1) [B], and token counts.

    The batch holds "pixel_values", or "image_features" (`PaliGemma.embed_image`'s output) where the vision
    tower and projector are frozen and were run once for the whole fine-tuning set."""
    has_image = batch.get("pixel_values") is not None or batch.get("image_features") is not None
    # The image tokens lead every sequence and predict no answer token: no logits for them.
    start = model.config.num_image_tokens if has_image else 0
    logits = model.apply(
        {"params": params},
        input_ids=batch["input_ids"],
        pixel_values=batch.get("pixel_values"),
        image_features=batch.get("image_features"),
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
        logits_from=start,
    ).logits[:, :-1].astype(jnp.float32)
    targets = batch["input_ids"][:, start + 1 :]
    weight = ((batch["token_type_ids"][:, start + 1 :] == 1) & (batch["attention_mask"][:, start + 1 :] == 1))
    # log p(target) through a one-hot product: its gradient is dense, where take_along_axis's is a scatter.
    target_logit = (logits * jax.nn.one_hot(targets, logits.shape[-1], dtype=logits.dtype)).sum(-1)
    nll = jax.nn.logsumexp(logits, axis=-1) - target_logit
    weight = weight.astype(jnp.float32)
    count = weight.sum(axis=1)
    return (nll * weight).sum(axis=1) / jnp.maximum(count, 1.0), count


def make_train_step(model: PaliGemma, tx, labels, shardings=None):
    """jitted (params, opt_state, batch) -> (params, opt_state, loss): mean answer-token NLL over the batch.

    shardings: None, or (params, opt_state, batch, replicated) shardings from rls3_jax.sharding: the step
    then runs on the mesh with its state staying where the shardings put it.
    """

    def step(params, opt_state, batch):
        trainable, frozen = _split(params, labels)

        def loss_fn(trainable):
            merged = unflatten_dict({**trainable, **frozen})
            per_sample, count = answer_nll(model, merged, batch)
            return (per_sample * count).sum() / jnp.maximum(count.sum(), 1.0)

        loss, grads = jax.value_and_grad(loss_fn)(trainable)
        grads = unflatten_dict({**grads, **jax.tree.map(jnp.zeros_like, frozen)})
        updates, opt_state = tx.update(grads, opt_state, params)
        # Only the trained leaves change: frozen ones pass through (their donated buffers are reused, not
        # rewritten with a zero update, which for a 3B model would be the whole model's memory per step).
        trained = optax.apply_updates(trainable, _split(updates, labels)[0])
        return unflatten_dict({**trained, **frozen}), opt_state, loss

    if shardings is None:
        return jax.jit(step, donate_argnums=(0, 1))
    params_sh, opt_sh, batch_sh, replicated = shardings
    return jax.jit(step, donate_argnums=(0, 1), in_shardings=(params_sh, opt_sh, batch_sh),
                   out_shardings=(params_sh, opt_sh, replicated))
