"""Our Flax CLIP loaded from a transformers checkpoint matches transformers' CLIPModel (fp32, <= 1e-4)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from rls3_jax.vlm.clip import model as clip  # noqa: E402
from rls3_jax.vlm.clip.inputs import CLIPImagePreprocessor  # noqa: E402
from rls3_jax.vlm.clip.weights import from_pretrained, save_clip_params  # noqa: E402

CONFIGS = {
    "narrow": dict(
        text_config=dict(
            vocab_size=99,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=16,
            eos_token_id=98,
            bos_token_id=97,
            pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=48,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=3,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=24,
    ),
    "wide_legacy_eos": dict(
        text_config=dict(
            vocab_size=150,
            hidden_size=64,
            intermediate_size=80,
            num_hidden_layers=3,
            num_attention_heads=2,
            max_position_embeddings=24,
            eos_token_id=2,
            pad_token_id=1,
            hidden_act="gelu",
        ),
        vision_config=dict(
            hidden_size=40,
            intermediate_size=72,
            num_hidden_layers=3,
            num_attention_heads=5,
            image_size=30,
            patch_size=6,
            hidden_act="gelu",
        ),
        projection_dim=16,
        logit_scale_init_value=2.0,
    ),
}


def _hf_model(name, seed=0):
    torch.manual_seed(seed)
    config = transformers.CLIPConfig(**CONFIGS[name])
    model = transformers.CLIPModel(config).eval()
    with torch.no_grad():  # LayerNorms start at 1/0: randomise everything so each mapping is exercised
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _inputs(name, n_text=5, n_image=3, seed=0):
    rng = np.random.default_rng(seed)
    text = CONFIGS[name]["text_config"]
    vision = CONFIGS[name]["vision_config"]
    length, vocab, eos = text["max_position_embeddings"], text["vocab_size"], text["eos_token_id"]
    ids = rng.integers(3, vocab - 3, size=(n_text, length))
    mask = np.ones_like(ids)
    for i in range(n_text):  # right padding after the end-of-text token, as CLIP's tokenizer pads
        end = int(rng.integers(2, length))
        ids[i, end] = eos if eos != 2 else vocab - 1  # legacy rule: end token has the largest id
        ids[i, end + 1 :] = text["pad_token_id"]
        mask[i, end + 1 :] = 0
    pixels = rng.normal(size=(n_image, 3, vision["image_size"], vision["image_size"])).astype(np.float32)
    return ids, mask, pixels


def _compare(hf_model, model, params, name):
    ids, mask, pixels = _inputs(name)
    with torch.no_grad():
        ref = hf_model(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            pixel_values=torch.from_numpy(pixels),
        )
    out = jax.jit(model.apply)({"params": params}, input_ids=ids, pixel_values=pixels, attention_mask=mask)
    diffs = {}
    for key in ("image_embeds", "text_embeds", "logits_per_image", "logits_per_text"):
        diffs[key] = float(np.max(np.abs(np.asarray(out[key]) - getattr(ref, key).numpy())))
        assert getattr(out, key).shape == tuple(getattr(ref, key).shape)
    assert max(diffs.values()) <= 1e-4, diffs
    return diffs


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_loaded_checkpoint_matches_transformers(tmp_path, name):
    hf_model = _hf_model(name)
    hf_model.save_pretrained(tmp_path)
    model, params = from_pretrained(tmp_path)
    assert model.config.vision.patch_size == CONFIGS[name]["vision_config"]["patch_size"]
    diffs = _compare(hf_model, model, params, name)
    print(name, diffs)


def test_sharded_checkpoint_and_round_trip(tmp_path):
    hf_model = _hf_model("narrow", seed=1)
    hf_model.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    model, params = from_pretrained(tmp_path / "sharded")
    _compare(hf_model, model, params, "narrow")
    # Our writer produces a directory transformers loads into the same model.
    save_clip_params(tmp_path / "ours", model.config, params)
    reloaded = transformers.CLIPModel.from_pretrained(tmp_path / "ours").eval()
    _compare(reloaded, model, params, "narrow")


def test_loader_errors_name_path_and_parameter(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        from_pretrained(tmp_path / "nowhere")
    hf_model = _hf_model("narrow")
    hf_model.save_pretrained(tmp_path / "m")
    config = json.loads((tmp_path / "m" / "config.json").read_text())
    (tmp_path / "wrong_type").mkdir()
    (tmp_path / "wrong_type" / "config.json").write_text(json.dumps({**config, "model_type": "siglip"}))
    with pytest.raises(ValueError, match="wrong_type.*siglip"):
        from_pretrained(tmp_path / "wrong_type")
    config["vision_config"]["intermediate_size"] = 65
    (tmp_path / "m" / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=r"m: parameter vision_model\.encoder\.layers\.0\.mlp\.fc1\.(weight|bias) has shape"
    ):
        from_pretrained(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no safetensors"):
        from_pretrained(tmp_path / "m")


def test_bf16_compute_stays_close():
    config = clip.CLIPConfig.from_hf_config({"model_type": "clip", **CONFIGS["narrow"]})
    params = clip.init_params(config, seed=0)
    ids, mask, pixels = _inputs("narrow")
    f32 = jax.jit(clip.CLIPModel(config).apply)(
        {"params": params}, input_ids=ids, pixel_values=pixels, attention_mask=mask
    )
    bf16 = jax.jit(clip.CLIPModel(config, dtype=jnp.bfloat16).apply)(
        {"params": params}, input_ids=ids, pixel_values=pixels, attention_mask=mask
    )
    assert bf16.image_embeds.dtype == jnp.float32
    assert np.max(np.abs(np.asarray(bf16.image_embeds) - np.asarray(f32.image_embeds))) < 0.05


@pytest.mark.parametrize("shape", [(40, 52), (57, 31), (24, 24)])
def test_image_preprocessing_matches_transformers(tmp_path, shape):
    processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 28, "width": 28}
    )
    processor.save_pretrained(tmp_path)
    ours = CLIPImagePreprocessor.from_pretrained(tmp_path)
    images = np.random.default_rng(0).integers(0, 256, size=(2, *shape, 3), dtype=np.uint8)
    ref = processor(images=list(images), return_tensors="np")["pixel_values"]
    got = ours(images)
    assert got.shape == ref.shape == (2, 3, 28, 28)
    assert np.max(np.abs(got - ref)) <= 1e-5
