"""Parity of the Flax PaliGemma with transformers' PyTorch one on tiny random checkpoints (fp32, CPU)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

from rls3_jax.vlm import hf_weights  # noqa: E402
from rls3_jax.vlm.paligemma import decode  # noqa: E402
from rls3_jax.vlm.paligemma import weights as paligemma_weights  # noqa: E402
from rls3_jax.vlm.paligemma.inputs import HFPrompts, ImageSpec, preprocess_images  # noqa: E402

CONFIGS = {
    # multi-query attention, 32 px images in 8 px patches
    "mqa": dict(
        vision=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8),
        text=dict(hidden_size=48, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=1, head_dim=12),
    ),
    # grouped-query attention (2 groups), 28 px images in 14 px patches, 3 decoder layers
    "gqa": dict(
        vision=dict(hidden_size=24, intermediate_size=40, num_hidden_layers=1, num_attention_heads=2, image_size=28, patch_size=14),
        text=dict(hidden_size=32, intermediate_size=80, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2, head_dim=16),
    ),
}
CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ?.,\n"


def _tokenizer():
    from transformers import GemmaTokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4, "▁": 5}
    for ch in CHARS:
        vocab.setdefault(ch, len(vocab))
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he")]
    for a, b in merges:
        vocab[a + b] = len(vocab)
    return GemmaTokenizer(vocab=vocab, merges=merges)


def _processor(image_size: int, patch: int):
    from transformers import PaliGemmaProcessor, SiglipImageProcessor

    image_processor = SiglipImageProcessor(size={"height": image_size, "width": image_size})
    image_processor.image_seq_length = (image_size // patch) ** 2
    return PaliGemmaProcessor(image_processor=image_processor, tokenizer=_tokenizer())


def _build(name: str, directory):
    """A random PaliGemmaForConditionalGeneration (every weight perturbed, norms included), saved with its processor."""
    from transformers import PaliGemmaConfig, PaliGemmaForConditionalGeneration

    spec = CONFIGS[name]
    processor = _processor(spec["vision"]["image_size"], spec["vision"]["patch_size"])
    vocab = len(processor.tokenizer)
    torch.manual_seed(0)
    config = PaliGemmaConfig(
        vision_config=dict(spec["vision"], vision_use_head=False),
        text_config=dict(spec["text"], vocab_size=vocab),
        image_token_index=processor.image_token_id,
        projection_dim=spec["text"]["hidden_size"],
        vocab_size=vocab,
    )
    model = PaliGemmaForConditionalGeneration(config).eval()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if p.ndim == 1:  # norms (Gemma's stored as offsets from one) and biases
                p.copy_(torch.randn_like(p) * 0.3 + (1.0 if "layer_norm" in pname and pname.endswith("weight") else 0.0))
            elif "embed" in pname:  # small embeddings: otherwise the tied output layer mostly repeats the input token
                p.copy_(torch.randn_like(p) * 0.05)
            else:
                p.copy_(torch.randn_like(p) * 2.0 / np.sqrt(p[0].numel()))
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return model, processor


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def checkpoint(request, tmp_path_factory):
    directory = tmp_path_factory.mktemp(f"paligemma_{request.param}")
    model, processor = _build(request.param, directory)
    return request.param, directory, model, processor


def _images(n: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def test_logits_match_transformers(checkpoint):
    name, directory, torch_model, processor = checkpoint
    model, params = paligemma_weights.from_pretrained(directory)
    size = CONFIGS[name]["vision"]["image_size"]
    inputs = processor(
        text=["What is the position of the cup?", "Where is the red book?"],
        images=_images(2, size + 5),
        suffix=["The cup is left.", "Above."],
        padding="longest",
        return_tensors="pt",
    )
    with torch.no_grad():
        expected = torch_model(**{k: v for k, v in inputs.items() if k != "labels"}).logits.numpy()
    ours = model.apply(
        {"params": params},
        input_ids=jnp.asarray(inputs["input_ids"].numpy()),
        pixel_values=jnp.asarray(inputs["pixel_values"].numpy()),
        attention_mask=jnp.asarray(inputs["attention_mask"].numpy()),
        token_type_ids=jnp.asarray(inputs["token_type_ids"].numpy()),
    )
    assert ours["logits"].shape == expected.shape
    valid = inputs["attention_mask"].numpy().astype(bool)
    diff = np.abs(np.asarray(ours.logits) - expected)[valid].max()
    assert np.abs(expected).max() > 1.0  # the random weights give non-trivial logits
    assert diff <= 1e-4, f"max abs logit difference {diff}"


def test_answer_loss_matches_transformers(checkpoint):
    """The fine-tuning loss (logits only where an answer token is predicted) is transformers' loss with the
    prefix labelled -100."""
    from rls3_jax.vlm.paligemma import train as paligemma_train

    name, directory, torch_model, processor = checkpoint
    model, params = paligemma_weights.from_pretrained(directory)
    size = CONFIGS[name]["vision"]["image_size"]
    inputs = processor(
        text=["What is the position of the cup?", "Where?"],
        images=_images(2, size, seed=1),
        suffix=["The cup is to the left of the plate.", "Above."],
        padding="longest",
        return_tensors="pt",
    )
    with torch.no_grad():
        expected = float(torch_model(**inputs).loss)
    batch = {k: jnp.asarray(inputs[k].numpy()) for k in ("input_ids", "pixel_values", "attention_mask", "token_type_ids")}
    per_sample, count = paligemma_train.answer_nll(model, params, batch)
    ours = float((per_sample * count).sum() / count.sum())
    assert int(count.sum()) == int((inputs["labels"] != -100).sum())  # every answer token counted
    assert abs(ours - expected) <= 1e-4 * max(1.0, abs(expected)), (ours, expected)


def test_greedy_decoding_matches_generate(checkpoint):
    name, directory, torch_model, processor = checkpoint
    model, params = paligemma_weights.from_pretrained(directory)
    size = CONFIGS[name]["vision"]["image_size"]
    # Prompts of different lengths: the processor pads them on the left.
    inputs = processor(
        text=["caption", "What is the position of the cup relative to the plate?", "the"],
        images=_images(3, size, seed=1),
        padding="longest",
        return_tensors="pt",
    )
    eos = processor.tokenizer.eos_token_id
    new = 12
    with torch.no_grad():
        generated = torch_model.generate(**inputs, max_new_tokens=new, do_sample=False, eos_token_id=eos, pad_token_id=0)
    expected = generated[:, inputs["input_ids"].shape[1] :].numpy()
    decoder = decode.make_greedy_decoder(model, new, eos, 0)
    tokens, steps = decoder(
        params, jnp.asarray(inputs["input_ids"].numpy()), jnp.asarray(inputs["pixel_values"].numpy()),
        jnp.asarray(inputs["attention_mask"].numpy()),
    )
    tokens = np.asarray(tokens)[:, : expected.shape[1]]
    assert len(set(map(tuple, expected))) > 1 and len(set(expected[0])) > 1  # not a degenerate repetition
    np.testing.assert_array_equal(tokens, expected)


def test_prompt_ids_match_processor(checkpoint):
    name, directory, _, processor = checkpoint
    prompts = HFPrompts(directory)
    n_img = processor.image_seq_length
    size = CONFIGS[name]["vision"]["image_size"]
    question, answer = "What is the position of the cup relative to the plate?", "The cup is behind the plate."
    inputs = processor(text=question, images=_images(1, size), suffix=answer, return_tensors="np")
    prefix = [prompts.image_id] * n_img + prompts.prefix(question)
    suffix = prompts.suffix(answer)
    np.testing.assert_array_equal(inputs["input_ids"][0], prefix + suffix)
    np.testing.assert_array_equal(inputs["token_type_ids"][0], [0] * len(prefix) + [1] * len(suffix))
    assert prompts.decode(suffix) == answer


def test_image_preprocessing_matches_processor(checkpoint):
    name, directory, _, processor = checkpoint
    size = CONFIGS[name]["vision"]["image_size"]
    spec = ImageSpec.from_preprocessor_config(directory / "preprocessor_config.json", size)
    for image_size, tol in ((size, 1e-6), (size * 2 + 3, 0.05)):  # resizing may differ by interpolation details
        images = _images(2, image_size, seed=3)
        expected = processor.image_processor(images, return_tensors="np")["pixel_values"]
        ours = preprocess_images(np.stack([np.asarray(im) for im in images]), spec)
        assert ours.shape == expected.shape
        assert np.abs(ours - expected).mean() <= tol


def _rewrite(src, dst, rename, shards: int = 1):
    tensors = dict(hf_weights.LazyWeights(src))
    shutil.copytree(src, dst)
    for f in dst.glob("*.safetensors"):
        f.unlink()
    renamed = {rename(k): np.ascontiguousarray(v) for k, v in tensors.items()}
    keys = sorted(renamed)
    if shards == 1:
        save_file(renamed, str(dst / "model.safetensors"))
        return
    weight_map = {}
    for i in range(shards):
        part = keys[i::shards]
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_file({k: renamed[k] for k in part}, str(dst / fname))
        weight_map.update({k: fname for k in part})
    (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_key_layouts_and_shards_load_identically(checkpoint, tmp_path):
    _, directory, _, _ = checkpoint
    _, reference = paligemma_weights.from_pretrained(directory)
    tied = dict(hf_weights.LazyWeights(directory))
    embed_key = next(k for k in tied if k.endswith("embed_tokens.weight"))
    hub_4x = lambda k: paligemma_weights.canonical_key(k).replace("vision_tower.", "vision_tower.vision_model.").replace(
        "language_model.", "language_model.model."
    )
    v5 = lambda k: "model." + paligemma_weights.canonical_key(k)
    variants = {"hub_4x": (hub_4x, 1), "transformers_5x": (v5, 1), "sharded": (hub_4x, 3)}
    for label, (rename, shards) in variants.items():
        dst = tmp_path / label
        _rewrite(directory, dst, rename, shards)
        if label == "transformers_5x":  # with an explicit (tied) output layer and a SigLIP head, both unused
            extra = {"lm_head.weight": np.asarray(tied[embed_key]), "model.vision_tower.head.probe": np.zeros((1, 1, 4), np.float32)}
            save_file(extra, str(dst / "extra.safetensors"))
        _, params = paligemma_weights.from_pretrained(dst)
        for a, b in zip(_leaves(reference), _leaves(params)):
            np.testing.assert_array_equal(a, b)


def _leaves(tree):
    from flax.traverse_util import flatten_dict

    return [v for _, v in sorted(flatten_dict(tree).items())]


def test_loader_errors(checkpoint, tmp_path):
    _, directory, _, _ = checkpoint
    with pytest.raises(FileNotFoundError, match="checkpoint directory .*absent does not exist"):
        paligemma_weights.from_pretrained(tmp_path / "absent")
    wrong = tmp_path / "wrong_type"
    shutil.copytree(directory, wrong)
    cfg = json.loads((wrong / "config.json").read_text())
    (wrong / "config.json").write_text(json.dumps(dict(cfg, model_type="llava")))
    with pytest.raises(ValueError, match="model_type is 'llava'"):
        paligemma_weights.from_pretrained(wrong)
    mismatch = tmp_path / "mismatch"
    shutil.copytree(directory, mismatch)
    cfg["text_config"]["intermediate_size"] += 8
    (mismatch / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="mlp.*has shape"):
        paligemma_weights.from_pretrained(mismatch)
    empty = tmp_path / "no_weights"
    empty.mkdir()
    shutil.copy(directory / "config.json", empty / "config.json")
    with pytest.raises(FileNotFoundError, match="no safetensors weights"):
        paligemma_weights.from_pretrained(empty)


def test_weights_round_trip_through_transformers_layout(checkpoint):
    _, directory, torch_model, _ = checkpoint
    _, params = paligemma_weights.from_pretrained(directory)
    ours = paligemma_weights.params_to_hf(params)
    theirs = {paligemma_weights.canonical_key(k): v.detach().numpy() for k, v in torch_model.state_dict().items()}
    for key, value in ours.items():
        np.testing.assert_array_equal(value, theirs[paligemma_weights.canonical_key(key)])


def _to_big_vision_npz(torch_model, path):
    """Write the model in big_vision's .npz layout (the facts of transformers' conversion script, inverted)."""
    sd = {paligemma_weights.canonical_key(k): v.detach().numpy() for k, v in torch_model.state_dict().items()}
    vc, tc = torch_model.config.vision_config, torch_model.config.text_config
    d, h, kv, hd = tc.hidden_size, tc.num_attention_heads, tc.num_key_value_heads, tc.head_dim
    vh = vc.num_attention_heads
    stack = lambda fmt, n, f=lambda x: x: np.stack([f(sd[fmt.format(i)]) for i in range(n)])
    vl, tl = vc.num_hidden_layers, tc.num_hidden_layers
    enc = "vision_tower.encoder.layers.{}."
    out = {
        "img/embedding/kernel": sd["vision_tower.embeddings.patch_embedding.weight"].transpose(2, 3, 1, 0),
        "img/embedding/bias": sd["vision_tower.embeddings.patch_embedding.bias"],
        "img/pos_embedding": sd["vision_tower.embeddings.position_embedding.weight"][None],
        "img/Transformer/encoder_norm/scale": sd["vision_tower.post_layernorm.weight"],
        "img/Transformer/encoder_norm/bias": sd["vision_tower.post_layernorm.bias"],
        "img/head/kernel": sd["multi_modal_projector.linear.weight"].T,
        "img/head/bias": sd["multi_modal_projector.linear.bias"],
        "llm/embedder/input_embedding": sd["language_model.embed_tokens.weight"],
        "llm/final_norm/scale": sd["language_model.norm.weight"],
    }
    block = "img/Transformer/encoderblock/"
    for ours, theirs in (("layer_norm1", "LayerNorm_0"), ("layer_norm2", "LayerNorm_1")):
        out[block + theirs + "/scale"] = stack(enc + ours + ".weight", vl)
        out[block + theirs + "/bias"] = stack(enc + ours + ".bias", vl)
    for ours, theirs in (("fc1", "Dense_0"), ("fc2", "Dense_1")):
        out[block + f"MlpBlock_0/{theirs}/kernel"] = stack(enc + f"mlp.{ours}.weight", vl, lambda w: w.T)
        out[block + f"MlpBlock_0/{theirs}/bias"] = stack(enc + f"mlp.{ours}.bias", vl)
    vd = vc.hidden_size
    for ours, theirs in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
        out[block + f"MultiHeadDotProductAttention_0/{theirs}/kernel"] = stack(enc + f"self_attn.{ours}.weight", vl, lambda w: w.T.reshape(vd, vh, -1))
        out[block + f"MultiHeadDotProductAttention_0/{theirs}/bias"] = stack(enc + f"self_attn.{ours}.bias", vl, lambda b: b.reshape(vh, -1))
    out[block + "MultiHeadDotProductAttention_0/out/kernel"] = stack(enc + "self_attn.out_proj.weight", vl, lambda w: w.T.reshape(vh, -1, vd))
    out[block + "MultiHeadDotProductAttention_0/out/bias"] = stack(enc + "self_attn.out_proj.bias", vl)
    lay = "language_model.layers.{}."
    out["llm/layers/attn/q_einsum/w"] = stack(lay + "self_attn.q_proj.weight", tl, lambda w: w.reshape(h, hd, d).transpose(0, 2, 1))
    kv_w = lambda name: stack(lay + f"self_attn.{name}.weight", tl, lambda w: w.reshape(kv, hd, d).transpose(0, 2, 1))
    out["llm/layers/attn/kv_einsum/w"] = np.stack([kv_w("k_proj"), kv_w("v_proj")], axis=1)
    out["llm/layers/attn/attn_vec_einsum/w"] = stack(lay + "self_attn.o_proj.weight", tl, lambda w: w.T.reshape(h, hd, d))
    out["llm/layers/mlp/gating_einsum"] = np.stack(
        [stack(lay + "mlp.gate_proj.weight", tl, lambda w: w.T), stack(lay + "mlp.up_proj.weight", tl, lambda w: w.T)], axis=1
    )
    out["llm/layers/mlp/linear"] = stack(lay + "mlp.down_proj.weight", tl, lambda w: w.T)
    out["llm/layers/pre_attention_norm/scale"] = stack(lay + "input_layernorm.weight", tl)
    out["llm/layers/pre_ffw_norm/scale"] = stack(lay + "post_attention_layernorm.weight", tl)
    np.savez(path, **{"params/" + k: v for k, v in out.items()})


def test_big_vision_npz_gives_the_same_logits(checkpoint, tmp_path):
    name, directory, torch_model, processor = checkpoint
    _to_big_vision_npz(torch_model, tmp_path / "paligemma.npz")
    model, params = paligemma_weights.from_pretrained(tmp_path / "paligemma.npz")
    assert model.config.vision.image_size == CONFIGS[name]["vision"]["image_size"]
    inputs = processor(text=["Where is the cup?"], images=_images(1, 40), suffix=["Left."], return_tensors="pt")
    with torch.no_grad():
        expected = torch_model(**{k: v for k, v in inputs.items() if k != "labels"}).logits.numpy()
    ids = inputs["input_ids"].numpy()
    ids = np.where(ids == processor.image_token_id, model.config.image_token_index, ids)  # big_vision: no image token
    ours = model.apply(
        {"params": params}, input_ids=jnp.asarray(ids), pixel_values=jnp.asarray(inputs["pixel_values"].numpy()),
        token_type_ids=jnp.asarray(inputs["token_type_ids"].numpy()),
    ).logits
    assert np.abs(np.asarray(ours) - expected).max() <= 1e-4
