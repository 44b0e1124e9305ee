"""Batched greedy decoding for PaliGemma with a key/value cache, as one jitted function.

The prefix (image tokens, BOS, question, newline) is prefilled into a cache with room for the answer; the
answer tokens are then generated one at a time in a `lax.while_loop` that stops as soon as every sequence has
emitted EOS. Prompts of a batch may be padded on either side (attention_mask 0 on padding); positions count
valid tokens from 1, as transformers' generate() does. The jitted function compiles once per (batch, prefix
length) shape: pad prompts to `bucket_length` so that nearby lengths share a compilation.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from rls3_jax.vlm.paligemma.model import PaliGemma


def bucket_length(n: int, multiple: int = 16) -> int:
    """The padded prefix length used for a prompt of n tokens."""
    return -(-n // multiple) * multiple


def left_pad(sequences: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """(ids [B, length], attention_mask [B, length]) with the sequences right-aligned."""
    ids = np.full((len(sequences), length), pad_id, np.int32)
    mask = np.zeros((len(sequences), length), np.int32)
    for i, seq in enumerate(sequences):
        if len(seq) > length:
            raise ValueError(f"prompt {i} has {len(seq)} tokens, more than the padded length {length}")
        if len(seq):
            ids[i, length - len(seq) :] = seq
            mask[i, length - len(seq) :] = 1
    return ids, mask


def make_greedy_decoder(model: PaliGemma, max_new_tokens: int, eos_id: int, pad_id: int, shardings=None):
    """jitted (params, input_ids [B,P], pixel_values [B,C,H,W], attention_mask [B,P]) -> (tokens [B,N], steps).

    tokens hold the generated ids, EOS included, and `pad_id` after it; steps is how many tokens the loop
    generated before every sequence had finished (<= max_new_tokens). shardings: None, or (params, batch,
    replicated) shardings from rls3_jax.sharding (the outputs come back replicated).
    """
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be at least 1, got {max_new_tokens}")

    def decode(params, input_ids, pixel_values, attention_mask):
        variables = {"params": params}
        b, p = input_ids.shape
        cache_size = p + max_new_tokens
        logits, cache, positions = model.apply(
            variables, input_ids, pixel_values, attention_mask, cache_size, method=PaliGemma.prefill
        )
        valid = attention_mask.astype(bool)
        # The last valid prompt token predicts the first answer token (any padding side).
        last = p - 1 - jnp.argmax(valid[:, ::-1], axis=1)
        first = jnp.argmax(jnp.take_along_axis(logits, last[:, None, None], axis=1)[:, 0], axis=-1).astype(jnp.int32)
        next_position = positions[jnp.arange(b), last] + 1
        key_valid = jnp.zeros((b, cache_size), bool).at[:, :p].set(valid)
        tokens = jnp.full((b, max_new_tokens), pad_id, jnp.int32).at[:, 0].set(first)
        done = first == eos_id

        def cond(state):
            step, _, done, _, _ = state
            return (step < max_new_tokens) & ~jnp.all(done)

        def body(state):
            step, tokens, done, key_valid, cache = state
            slot = p + step - 1
            previous = jax.lax.dynamic_slice_in_dim(tokens, step - 1, 1, axis=1)
            key_valid = jax.lax.dynamic_update_slice(key_valid, jnp.ones((b, 1), bool), (0, slot))
            logits, cache = model.apply(
                variables, previous, (next_position + step - 1)[:, None], key_valid, cache, slot, method=PaliGemma.extend
            )
            token = jnp.where(done, pad_id, jnp.argmax(logits[:, -1], axis=-1).astype(jnp.int32))
            tokens = jax.lax.dynamic_update_slice(tokens, token[:, None], (0, step))
            return step + 1, tokens, done | (token == eos_id), key_valid, cache

        steps, tokens, _, _, _ = jax.lax.while_loop(cond, body, (jnp.int32(1), tokens, done, key_valid, cache))
        return tokens, steps

    if shardings is None:
        return jax.jit(decode)
    params_sh, batch_sh, replicated = shardings
    return jax.jit(decode, in_shardings=(params_sh, batch_sh, batch_sh, batch_sh), out_shardings=replicated)


def strip_answer(tokens: Sequence[int], eos_id: int, pad_id: int) -> list[int]:
    """The generated ids up to (not including) EOS."""
    out = []
    for t in tokens:
        if t == eos_id or t == pad_id:
            break
        out.append(int(t))
    return out
