"""Contrastive loss, NegCLIP columns, hard-negative accuracy, tokenizer and the jitted train step."""

import math

import jax.numpy as jnp
import numpy as np
import pytest

from rls3_jax import prompts
from rls3_jax.vlm.clip import contrastive
from rls3_jax.vlm.clip import model as clip
from rls3_jax.vlm.clip.tokenizer import WORDS, ClipWordTokenizer


def _brute_force_loss(logits, n):
    i2t = [-math.log(math.exp(logits[i, i]) / sum(math.exp(v) for v in logits[i])) for i in range(n)]
    t2i = [
        -math.log(math.exp(logits[i, i]) / sum(math.exp(logits[j, i]) for j in range(n))) for i in range(n)
    ]
    return 0.5 * (sum(i2t) / n + sum(t2i) / n)


@pytest.mark.parametrize("columns", [1, 3])
def test_loss_is_eq1_with_negclip_columns_and_masking(columns):
    rng = np.random.default_rng(0)
    n = 5
    logits = rng.normal(size=(n, columns * n)) * 3
    loss_np, per = contrastive.contrastive_loss(logits, xp=np)
    loss_jax, _ = contrastive.contrastive_loss(jnp.asarray(logits, jnp.float32))
    assert loss_np == pytest.approx(_brute_force_loss(logits, n), rel=1e-9)
    assert float(loss_jax) == pytest.approx(loss_np, rel=1e-5)
    assert per.mean() == pytest.approx(loss_np)
    # Padding two extra samples (rows and their columns) and masking them leaves the loss unchanged.
    m = n + 2
    padded = rng.normal(size=(m, columns * m)) * 3
    for c in range(columns):
        padded[:n, c * m : c * m + n] = logits[:, c * n : (c + 1) * n]
    valid = np.arange(m) < n
    masked, per_masked = contrastive.contrastive_loss(padded, valid, xp=np)
    assert masked == pytest.approx(loss_np, rel=1e-9)
    assert np.all(per_masked[n:] == 0)


def test_hard_negative_accuracy_and_breakdown():
    samples = [
        {"located": "cup", "reference": "lamp", "terms": ("left",), "caption": "c1"},
        {"located": "cup", "reference": "lamp", "terms": ("above", "behind"), "caption": "c2"},
        {"located": "cup", "reference": "lamp", "terms": ("above", "in front", "right"), "caption": "c3"},
    ]
    scores = np.array([[0.9, 0.1, 0.2], [0.3, 0.5, 0.1], [0.4, 0.4, 0.0]])  # tie counts as wrong
    correct = contrastive.hard_negative_correct(scores)
    assert correct.tolist() == [True, False, False]
    per_term, per_complexity = contrastive.breakdown(correct.astype(float), samples)
    assert per_term == {"left": 1.0, "above": 0.0, "behind": 0.0, "in front": 0.0, "right": 0.0}
    assert per_complexity == {1: 1.0, 2: 0.0, 3: 0.0}


def test_hard_negative_texts_swap_a_term_and_the_objects():
    sample = prompts.describe_pair(
        {
            "objects": [{"name": "cup", "position": [0, 1, 0]}, {"name": "red book", "position": [1, 0, 0]}],
            "camera": {"forward": [0, 0, 1]},
        },
        0,
        1,
    )
    assert sample["caption"] == "The cup is above and to the left of the red book."
    (term,), (objects,) = contrastive.hard_negative_texts([sample])
    assert objects == "The red book is above and to the left of the cup."
    assert term in (
        "The cup is below and to the left of the red book.",
        "The cup is above and to the right of the red book.",
    )
    assert contrastive.hard_negative_texts([sample]) == ([term], [objects])  # deterministic without rng


def test_tokenizer_covers_the_project_vocabulary_and_rejects_unknown_words():
    sim_objects = pytest.importorskip("sim.objects")
    tok = ClipWordTokenizer(WORDS, max_length=24)
    names = sim_objects.OBJECT_NAMES
    texts = []
    for a in names:
        for b in names:
            if a != b:
                texts.append(prompts.caption(a, b, ("above", "behind", "left")))
                texts.append(prompts.question(a, b))
    ids, mask = tok.encode(texts)
    assert ids.shape == mask.shape == (len(texts), 24)
    assert np.all(ids[:, 0] == tok.bos_token_id)
    lengths = mask.sum(1)
    assert np.all(ids[np.arange(len(texts)), lengths - 1] == tok.eos_token_id)
    assert tok.decode(ids[0]) == " ".join(tok.tokenize(texts[0]))
    with pytest.raises(ValueError, match="'giraffe'.*closed vocabulary"):
        tok.encode(["The giraffe is above the cup."])
    with pytest.raises(ValueError, match="max_length 4"):
        ClipWordTokenizer(WORDS, max_length=4).encode(["the cup is above the lamp"])


def _tiny_setup(seed=0):
    config = clip.CLIPConfig.from_hf_config(
        {
            "model_type": "clip",
            "projection_dim": 16,
            "text_config": dict(
                vocab_size=50,
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                max_position_embeddings=8,
                eos_token_id=1,
                pad_token_id=0,
            ),
            "vision_config": dict(
                hidden_size=32,
                intermediate_size=64,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=16,
                patch_size=8,
            ),
        }
    )
    rng = np.random.default_rng(seed)
    n = 8
    images = rng.integers(0, 256, size=(n, 16, 16, 3), dtype=np.uint8)
    ids = rng.integers(3, 50, size=(3 * n, 8)).astype(np.int32)
    ids[:, 5] = 1
    mask = (np.arange(8)[None] <= 5).astype(np.int32).repeat(3 * n, 0)
    batch = {"images": images, "input_ids": ids, "attention_mask": mask, "valid": np.arange(n) < n - 1}
    return config, batch


def test_train_step_learns_compiles_once_and_is_reproducible():
    config, batch = _tiny_setup()
    optimizer = contrastive.make_optimizer(contrastive.TrainConfig(learning_rate=3e-3, warmup_steps=2))
    step = contrastive.make_train_step(clip.CLIPModel(config), optimizer)

    def run(seed):
        state = contrastive.init_train_state(clip.init_params(config, seed), optimizer)
        losses = []
        for _ in range(15):
            state, metrics = step(state, batch)
            losses.append(float(metrics["loss"]))
        return state, losses

    state, losses = run(0)
    assert losses[-1] < 0.5 * losses[0], losses  # memorises 7 image/3-text groups
    assert int(state["step"]) == 15
    assert step._cache_size() == 1  # one compilation for every step
    _, again = run(0)
    assert again == losses
    _, other = run(1)
    assert other != losses
