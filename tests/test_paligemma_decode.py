"""Cached greedy decoding against recomputation with the full forward pass; early exit; one compile per bucket."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict, unflatten_dict

from rls3_jax.vlm.paligemma import decode
from rls3_jax.vlm.paligemma.model import PaliGemmaConfig, TextConfig, VisionConfig, init_params

CONFIG = PaliGemmaConfig(
    vision=VisionConfig(image_size=16, patch_size=8, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
    text=TextConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=8),
    image_token_index=3,
)
IMG = CONFIG.num_image_tokens


@pytest.fixture(scope="module")
def model_and_params():
    model, params = init_params(CONFIG, seed=0)
    # Small embeddings and perturbed norms so that greedy outputs depend on the context (not a repetition).
    flat = flatten_dict(params)
    keys = jax.random.split(jax.random.key(1), len(flat))
    for k, (path, v) in zip(keys, sorted(flat.items())):
        if path[-1] == "embedding":
            flat[path] = v * 0.05
        elif path[-1] == "scale":
            flat[path] = v + 0.3 * jax.random.normal(k, v.shape)
        elif path[-1] == "kernel":
            flat[path] = v * 2.0
    return model, unflatten_dict(flat)


def _prompts(rng, lengths):
    return [[3] * IMG + [2, *rng.integers(5, 64, n).tolist()] for n in lengths]


def _reference_greedy(model, params, prompts, pixels, new, eos):
    """Greedy decoding by re-running the full forward pass on the growing sequences (right-padded to one
    fixed length, so the jitted forward compiles once)."""
    length = max(map(len, prompts)) + new
    forward = jax.jit(lambda ids, px, mask, types: model.apply(
        {"params": params}, input_ids=ids, pixel_values=px, attention_mask=mask, token_type_ids=types).logits)
    out = []
    for row, prompt in enumerate(prompts):
        seq, tokens = list(prompt), []
        for _ in range(new):
            ids = np.zeros((1, length), np.int32)
            ids[0, : len(seq)] = seq
            mask = (np.arange(length) < len(seq)).astype(np.int32)[None]
            types = (np.arange(length) >= len(prompt)).astype(np.int32)[None]
            logits = forward(ids, pixels[row : row + 1], mask, types)
            tok = int(jnp.argmax(logits[0, len(seq) - 1]))
            tokens.append(tok)
            seq.append(tok)
            if tok == eos:
                break
        out.append(tokens + [0] * (new - len(tokens)))
    return np.asarray(out)


def test_cached_decoding_matches_full_recomputation(model_and_params):
    model, params = model_and_params
    rng = np.random.default_rng(0)
    prompts = _prompts(rng, [3, 9, 6])
    pixels = jnp.asarray(rng.standard_normal((3, 3, 16, 16)), jnp.float32)
    new = 8
    expected = _reference_greedy(model, params, prompts, pixels, new, eos=-1)
    assert len({tuple(r) for r in expected}) == 3 and len(set(expected[0])) > 1
    ids, mask = decode.left_pad(prompts, decode.bucket_length(max(map(len, prompts))), pad_id=0)
    decoder = decode.make_greedy_decoder(model, new, eos_id=-1, pad_id=0)
    tokens, steps = decoder(params, ids, pixels, mask)
    np.testing.assert_array_equal(np.asarray(tokens), expected)
    assert int(steps) == new


def test_early_exit_when_every_sequence_has_emitted_eos(model_and_params):
    model, params = model_and_params
    rng = np.random.default_rng(2)
    prompt = _prompts(rng, [5])[0]
    pixels = jnp.asarray(np.repeat(rng.standard_normal((1, 3, 16, 16)), 2, axis=0), jnp.float32)
    free = _reference_greedy(model, params, [prompt], pixels, 10, eos=-1)[0]
    eos = int(free[2])
    first = int(np.flatnonzero(free == eos)[0])
    ids, mask = decode.left_pad([prompt, prompt], 16 + IMG, pad_id=0)
    tokens, steps = decode.make_greedy_decoder(model, 10, eos_id=eos, pad_id=0)(params, ids, pixels, mask)
    assert int(steps) == first + 1 < 10  # stopped right after the EOS, not at max_new_tokens
    tokens = np.asarray(tokens)
    np.testing.assert_array_equal(tokens[0, : first + 1], free[: first + 1])
    assert (tokens[:, first + 1 :] == 0).all()
    assert decode.strip_answer(tokens[0], eos, 0) == free[:first].tolist()


def test_one_compilation_per_batch_and_prefix_bucket(model_and_params):
    model, params = model_and_params
    rng = np.random.default_rng(3)
    decoder = decode.make_greedy_decoder(model, 4, eos_id=1, pad_id=0)
    pixels = jnp.asarray(rng.standard_normal((2, 3, 16, 16)), jnp.float32)
    for lengths in ([2, 7], [5, 3], [1, 9]):  # different prompts, same bucket
        prompts = _prompts(rng, lengths)
        decoder(params, *_padded(prompts, pixels))
    assert decoder._cache_size() == 1
    decoder(params, *_padded(_prompts(rng, [20, 4]), pixels))  # a longer bucket
    assert decoder._cache_size() == 2


def _padded(prompts, pixels):
    ids, mask = decode.left_pad(prompts, decode.bucket_length(max(map(len, prompts))), pad_id=0)
    return ids, pixels, mask


def test_left_pad_rejects_too_long_prompts():
    with pytest.raises(ValueError, match="prompt 0 has 5 tokens"):
        decode.left_pad([[1, 2, 3, 4, 5]], 4, pad_id=0)
