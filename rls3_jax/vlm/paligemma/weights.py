"""PaliGemma checkpoint reading: Hugging Face safetensors (single or sharded) and big_vision .npz -> Flax params.

Key layouts differ between sources; every variant is first brought to one canonical transformers-4.x-like
naming without the `model.` wrappers (`vision_tower.embeddings...`, `language_model.layers...`), then renamed
to the Flax tree of `model.PaliGemma` and checked leaf by leaf against its shapes:
- hub checkpoints / transformers 4.x: `vision_tower.vision_model.*`, `language_model.model.*`, `language_model.lm_head`
- transformers 5.x: `vision_tower.*`, optionally all under `model.`, `lm_head.weight`
- big_vision .npz: `params/img/...`, `params/llm/...` with layers stacked on a leading axis.
The SigLIP pooling head (absent from real PaliGemma, `vision_use_head=False`) and the tied output layer are
not used and are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import jax
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from rls3_jax.vlm import hf_weights
from rls3_jax.vlm.paligemma.model import PaliGemma, PaliGemmaConfig, TextConfig, VisionConfig, init_params


def canonical_key(key: str) -> str:
    """Bring a transformers 4.x / 5.x key to `vision_tower.<...>` / `language_model.<...>` / `multi_modal_projector.<...>`."""
    key = key.removeprefix("model.")
    key = key.replace("vision_tower.vision_model.", "vision_tower.")
    key = key.replace("language_model.model.", "language_model.")
    return key


_SKIPPED = re.compile(r"^(lm_head\.|language_model\.lm_head\.|vision_tower\.head\.)")


def _flax_path(key: str) -> tuple[tuple[str, ...], str]:
    """Canonical transformers key -> (Flax path, how to convert the array)."""
    parts = key.split(".")
    leaf = parts.pop()
    parts = [p for p in parts if p not in ("embeddings", "encoder", "linear")]
    path: list[str] = []
    for p in parts:
        if path and path[-1] == "layers" and p.isdigit():
            path[-1] = f"layers_{p}"
        else:
            path.append(p)
    module = path[-1]
    if module == "patch_embedding":
        return (*path, "kernel" if leaf == "weight" else "bias"), "conv" if leaf == "weight" else "copy"
    if module == "position_embedding":
        return tuple(path), "copy"
    if module == "embed_tokens":
        return (*path, "embedding"), "copy"
    if "norm" in module:
        return (*path, "scale" if leaf == "weight" else "bias"), "copy"
    return (*path, "kernel" if leaf == "weight" else "bias"), "linear" if leaf == "weight" else "copy"


def hf_to_params(tensors: dict[str, np.ndarray], config: PaliGemmaConfig, where: str = "checkpoint") -> dict:
    """Rename and transpose transformers tensors into the Flax parameter tree, checking every shape."""
    template = flatten_dict(jax.eval_shape(lambda: init_params(config)[1]))
    out = {}
    for name in tensors:  # a skipped tensor (e.g. the tied output layer) is never read
        key = canonical_key(name)
        if _SKIPPED.match(key):
            continue
        value = tensors[name]
        path, how = _flax_path(key)
        if path not in template:
            raise ValueError(f"{where}: unexpected tensor {key} (no parameter {'/'.join(path)} in the model)")
        value = np.asarray(value, np.float32)
        if how == "linear":
            value = value.T
        elif how == "conv":
            value = value.transpose(2, 3, 1, 0)  # [out, in, kh, kw] -> [kh, kw, in, out]
        expected = template[path].shape
        if value.shape != expected:
            raise ValueError(f"{where}: {key} has shape {value.shape} after conversion, the config expects {expected}")
        out[path] = value
    missing = sorted("/".join(p) for p in template if p not in out)
    if missing:
        raise ValueError(f"{where}: {len(missing)} parameters missing, e.g. {missing[:3]}")
    return unflatten_dict(out)


def params_to_hf(params: dict) -> dict[str, np.ndarray]:
    """The inverse renaming (transformers 4.x layout), e.g. to hand our weights to transformers."""
    out = {}
    for path, value in flatten_dict(params).items():
        value = np.asarray(value, np.float32)
        names = [f"layers.{p[7:]}" if p.startswith("layers_") else p for p in path]
        top, leaf = names[0], names[-1]
        if top == "vision_tower":
            mid = names[1:-1]
            if mid and mid[0] in ("patch_embedding",):
                mid = ["embeddings", *mid]
            elif names[1] == "position_embedding":
                out["vision_tower.vision_model.embeddings.position_embedding.weight"] = value
                continue
            elif mid and mid[0].startswith("layers."):
                mid = ["encoder", *mid]
            prefix = "vision_tower.vision_model." + ".".join(mid)
        elif top == "multi_modal_projector":
            prefix = "multi_modal_projector.linear"
        else:
            prefix = "language_model.model." + ".".join(names[1:-1])
        if leaf == "kernel":
            value = value.transpose(3, 2, 0, 1) if value.ndim == 4 else value.T
        hf_leaf = "bias" if leaf == "bias" else "weight"
        out[f"{prefix}.{hf_leaf}"] = np.ascontiguousarray(value)
    return out


# ----------------------------------------------------------------------------------------------- big_vision


def load_big_vision_npz(path: str | Path) -> tuple[PaliGemmaConfig, dict]:
    """A big_vision PaliGemma .npz (keys `params/img/...`, `params/llm/...`, stacked layers): config from shapes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no big_vision checkpoint at {path}")
    with np.load(path, allow_pickle=False) as data:
        flat = {k.removeprefix("params/"): data[k] for k in data.files}
    where = str(path)
    try:
        patch = flat["img/embedding/kernel"]
        q = flat["llm/layers/attn/q_einsum/w"]
        kv = flat["llm/layers/attn/kv_einsum/w"]
        gating = flat["llm/layers/mlp/gating_einsum"]
        img_q = flat["img/Transformer/encoderblock/MultiHeadDotProductAttention_0/query/kernel"]
        img_mlp = flat["img/Transformer/encoderblock/MlpBlock_0/Dense_0/kernel"]
        embedding = flat["llm/embedder/input_embedding"]
    except KeyError as e:
        raise ValueError(f"{where}: not a big_vision PaliGemma checkpoint (missing {e.args[0]})") from None
    p, _, channels, width = patch.shape
    num_patches = flat["img/pos_embedding"].reshape(-1, width).shape[0]
    side = int(round(num_patches**0.5))
    vision = VisionConfig(
        image_size=side * p, patch_size=p, num_channels=channels, hidden_size=width,
        intermediate_size=img_mlp.shape[-1], num_hidden_layers=img_q.shape[0], num_attention_heads=img_q.shape[2],
    )
    layers, heads, d, head_dim = q.shape
    text = TextConfig(
        vocab_size=embedding.shape[0], hidden_size=d, intermediate_size=gating.shape[-1], num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv.shape[2], head_dim=head_dim,
    )
    # big_vision has no image placeholder token: an id past the vocabulary (embedded as 0, then replaced).
    config = PaliGemmaConfig(vision=vision, text=text, image_token_index=embedding.shape[0])
    return config, hf_to_params(_big_vision_to_hf(flat, config), config, where)


def _big_vision_to_hf(flat: dict, config: PaliGemmaConfig) -> dict[str, np.ndarray]:
    """The renaming/reshaping of transformers' conversion script, as canonical keys."""
    v, t = config.vision, config.text
    out = {
        "vision_tower.embeddings.patch_embedding.weight": flat["img/embedding/kernel"].transpose(3, 2, 0, 1),
        "vision_tower.embeddings.patch_embedding.bias": flat["img/embedding/bias"],
        "vision_tower.embeddings.position_embedding.weight": flat["img/pos_embedding"].reshape(-1, v.hidden_size),
        "vision_tower.post_layernorm.weight": flat["img/Transformer/encoder_norm/scale"],
        "vision_tower.post_layernorm.bias": flat["img/Transformer/encoder_norm/bias"],
        "multi_modal_projector.linear.weight": flat["img/head/kernel"].T,
        "multi_modal_projector.linear.bias": flat["img/head/bias"],
        "language_model.embed_tokens.weight": flat["llm/embedder/input_embedding"],
        "language_model.norm.weight": flat["llm/final_norm/scale"],
    }
    block = "img/Transformer/encoderblock/"
    attn = block + "MultiHeadDotProductAttention_0/"
    for i in range(v.num_hidden_layers):
        pre = f"vision_tower.encoder.layers.{i}."
        out[pre + "layer_norm1.weight"] = flat[block + "LayerNorm_0/scale"][i]
        out[pre + "layer_norm1.bias"] = flat[block + "LayerNorm_0/bias"][i]
        out[pre + "layer_norm2.weight"] = flat[block + "LayerNorm_1/scale"][i]
        out[pre + "layer_norm2.bias"] = flat[block + "LayerNorm_1/bias"][i]
        out[pre + "mlp.fc1.weight"] = flat[block + "MlpBlock_0/Dense_0/kernel"][i].T
        out[pre + "mlp.fc1.bias"] = flat[block + "MlpBlock_0/Dense_0/bias"][i]
        out[pre + "mlp.fc2.weight"] = flat[block + "MlpBlock_0/Dense_1/kernel"][i].T
        out[pre + "mlp.fc2.bias"] = flat[block + "MlpBlock_0/Dense_1/bias"][i]
        for ours, theirs in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value"), ("out_proj", "out")):
            kernel = flat[attn + theirs + "/kernel"][i]
            # query/key/value: [D, H, hd] -> [H*hd, D]; out: [H, hd, D] -> [D, H*hd]
            out[pre + f"self_attn.{ours}.weight"] = (
                kernel.reshape(-1, v.hidden_size).T if theirs == "out" else kernel.reshape(v.hidden_size, -1).T
            )
            out[pre + f"self_attn.{ours}.bias"] = flat[attn + theirs + "/bias"][i].reshape(-1)
    q, kv = flat["llm/layers/attn/q_einsum/w"], flat["llm/layers/attn/kv_einsum/w"]
    o, gating = flat["llm/layers/attn/attn_vec_einsum/w"], flat["llm/layers/mlp/gating_einsum"]
    for i in range(t.num_hidden_layers):
        pre = f"language_model.layers.{i}."
        out[pre + "self_attn.q_proj.weight"] = q[i].transpose(0, 2, 1).reshape(-1, t.hidden_size)
        out[pre + "self_attn.k_proj.weight"] = kv[i, 0].transpose(0, 2, 1).reshape(-1, t.hidden_size)
        out[pre + "self_attn.v_proj.weight"] = kv[i, 1].transpose(0, 2, 1).reshape(-1, t.hidden_size)
        out[pre + "self_attn.o_proj.weight"] = o[i].reshape(-1, t.hidden_size).T
        out[pre + "mlp.gate_proj.weight"] = gating[i, 0].T
        out[pre + "mlp.up_proj.weight"] = gating[i, 1].T
        out[pre + "mlp.down_proj.weight"] = flat["llm/layers/mlp/linear"][i].T
        out[pre + "input_layernorm.weight"] = flat["llm/layers/pre_attention_norm/scale"][i]
        out[pre + "post_attention_layernorm.weight"] = flat["llm/layers/pre_ffw_norm/scale"][i]
    return out


def from_pretrained(path, *, dtype: str = "float32"):
    """(model, params) from a Hugging Face PaliGemma directory (config.json + safetensors) or a big_vision .npz.

    No network and no torch: safetensors are read directly. Raises FileNotFoundError for a missing
    directory or weights file, ValueError for a wrong model type or a shape mismatch.
    """
    path = Path(path)
    if path.suffix == ".npz":
        config, params = load_big_vision_npz(path)
    else:
        path = hf_weights.checkpoint_dir(path)
        config = PaliGemmaConfig.from_hf_config(hf_weights.read_config(path), str(path / "config.json"))
        params = hf_to_params(hf_weights.LazyWeights(path), config, str(path))
    config = config.replace(dtype=dtype)
    return PaliGemma(config), params
