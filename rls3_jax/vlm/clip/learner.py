"""CLIP / NegCLIP as the RLS3 loop's VLM learner: evaluate on the episode's samples, fine-tune on a batch.

`ClipLearner.create(weights=None)` is the embedded default: a small CLIP (96 px images, closed-vocabulary
word tokenizer) starting from the base weights shipped in `rls3_jax/assets/clip_base.safetensors` (trained
by `python -m rls3_jax.vlm.clip.pretrain` to name the objects of the training scenes and place them in the
image, never on spatial relations or their words), or from a random init when that file is absent.
`create(weights=<dir>)` loads a Hugging Face CLIP checkpoint directory with its own tokenizer and preprocessing.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rls3_jax import prompts, sharding
from rls3_jax.vlm.clip import contrastive
from rls3_jax.vlm.clip import model as clip_model
from rls3_jax.vlm.clip.inputs import CLIPImagePreprocessor, load_hf_tokenizer
from rls3_jax.vlm.clip.model import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig
from rls3_jax.vlm.clip.tokenizer import WORDS, ClipWordTokenizer
from rls3_jax.vlm.clip.weights import hf_name, hf_to_flax, load_clip_params, unflatten_paths

ASSETS = Path(__file__).resolve().parents[2] / "assets"
BASE_WEIGHTS = ASSETS / "clip_base.safetensors"
TEXT_LENGTH = 24  # closed-vocabulary captions are at most ~18 words
HF_TEXT_LENGTH = 32  # BPE splits words further


def default_config(vocab_size: int, text_length: int = TEXT_LENGTH) -> CLIPConfig:
    """The embedded default: a ~0.6 M-parameter CLIP for 96 px renders.

    96 px keeps the catalogue's objects several pixels wide; 12 px patches keep the sequence at 64 tokens.
    """
    return CLIPConfig(
        text=CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=96,
            intermediate_size=384,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=text_length,
            pad_token_id=0,
            eos_token_id=1,
            bos_token_id=2,
        ),
        vision=CLIPVisionConfig(
            hidden_size=96,
            intermediate_size=384,
            num_hidden_layers=3,
            num_attention_heads=4,
            image_size=96,
            patch_size=12,
        ),
        projection_dim=96,
    )


def compute_dtype(dtype: str = "auto"):
    """bfloat16 on accelerators, float32 on CPU (where XLA's bf16 matmuls are slower)."""
    if dtype == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "bf16": jnp.bfloat16}[dtype]


def load_base_weights(path: Path = BASE_WEIGHTS) -> tuple[CLIPConfig, dict, list[str]]:
    """(config, params, tokenizer words) of a base-weights file written by `clip.pretrain`."""
    from safetensors.numpy import load_file

    meta_file = path.with_suffix(".json")
    if not meta_file.is_file():
        raise FileNotFoundError(f"base weights {path} have no {meta_file.name} beside them")
    with open(meta_file) as f:
        meta = json.load(f)
    config = CLIPConfig.from_hf_config(meta["config"], source=str(meta_file))
    tensors = load_file(str(path))
    params = {}
    for keypath, expected in jax.tree_util.tree_flatten_with_path(clip_model.param_shapes(config))[0]:
        p = tuple(k.key for k in keypath)
        name = hf_name(p)
        if name not in tensors:
            raise KeyError(f"base weights {path} lack parameter {name}")
        value = hf_to_flax(p, tensors[name])
        if value.shape != expected.shape:
            raise ValueError(
                f"base weights {path}: {name} has shape {value.shape}, expected {expected.shape}"
            )
        params[p] = value.astype(np.float32)
    return config, unflatten_paths(params), list(meta["words"])


class _HFTokenizer:
    """A transformers tokenizer behind ClipWordTokenizer's `encode` (fixed length, so shapes never change)."""

    def __init__(self, tokenizer, max_length: int):
        self.tokenizer, self.max_length = tokenizer, max_length

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        out = self.tokenizer(list(texts), padding="max_length", max_length=self.max_length, truncation=False)
        ids = np.asarray(out["input_ids"], np.int32)
        if ids.ndim != 2 or ids.shape[1] != self.max_length:
            raise ValueError(f"a text is longer than {self.max_length} tokens: {texts}")
        return ids, np.asarray(out["attention_mask"], np.int32)


@dataclasses.dataclass(frozen=True, eq=False)
class ClipLearner:
    """Model, static configuration and jitted functions; all mutable state lives in `state`."""

    name: str
    model: CLIPModel
    image_size: int
    negclip: bool
    batch_size: int
    eval_batch_size: int
    train_config: contrastive.TrainConfig
    tokenizer: Any
    base_params: Any  # numpy tree or None (random init from the seed)
    resize: Callable | None  # host-side uint8 resize + crop when images do not come at image_size
    all_pairs: bool  # fine-tune on a caption for every ordered pair of a sample's objects, not its one pair
    freeze_vision: bool  # fine-tuning leaves the vision tower as loaded
    _train_step: Callable
    _embed_images: Callable
    _pool_images: Callable  # the vision tower's pooled output: computed once per fine-tuning set when frozen
    _embed_texts: Callable
    _gather: Callable  # (fine-tuning set, image rows, caption rows, valid) -> a minibatch sharded over the mesh
    mesh: Any  # jax.sharding.Mesh: where state and batches live (one device: a trivial mesh)
    state_sharding: Any  # {"params", "opt", "step"} tree of NamedShardings (the fsdp rule)
    cache_vision: bool = True  # with freeze_vision: the tower's output computed once per fine-tuning set

    @classmethod
    def create(
        cls,
        weights: str | None = None,
        *,
        seed: int = 0,
        negclip: bool = False,
        batch_size: int = 64,
        eval_batch_size: int = 128,
        learning_rate: float | None = None,
        warmup_steps: int = 20,
        decay_steps: int = 5000,
        dtype: str = "auto",
        base_weights: str | Path | None = None,
        text_length: int = HF_TEXT_LENGTH,
        all_pairs: bool = False,
        freeze_vision: bool = False,
        mesh=None,
    ) -> ClipLearner:
        """weights: None (embedded default) or a Hugging Face CLIP directory; base_weights: another
        `clip.pretrain` file for the default; text_length: padded token length for a checkpoint's tokenizer;
        all_pairs: see `finetune`; freeze_vision: fine-tuning leaves the vision tower as loaded (the text
        tower and both projections train);
        mesh: a rls3_jax.sharding mesh (default: all devices on `data`; batch sizes round up to its size)."""
        del seed  # parameters come from init_state(seed)
        if weights is None:
            config, base_params, tokenizer, preprocessing, default_lr = _embedded_parts(base_weights)
        else:
            config, base_params, tokenizer, preprocessing, default_lr = _checkpoint_parts(weights, text_length)
        (mean, std), resize = preprocessing
        model = CLIPModel(config, dtype=compute_dtype(dtype))
        train_config = contrastive.TrainConfig(
            learning_rate=default_lr if learning_rate is None else learning_rate,
            warmup_steps=warmup_steps,
            decay_steps=decay_steps,
        )
        optimizer = _optimizer(train_config, freeze_vision)
        mesh = mesh or sharding.make_mesh()
        shapes = jax.eval_shape(
            lambda p: contrastive.init_train_state(p, optimizer),
            clip_model.param_shapes(config) if base_params is None else base_params,
        )
        state_sh = sharding.param_sharding(mesh, shapes)
        batch_sh, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
        multiple = sharding.batch_multiple(mesh)
        embeddings = _jitted_embeddings(model, mean, std, (state_sh["params"], batch_sh), replicated)
        return cls(
            name="negclip" if negclip else "clip",
            model=model,
            image_size=config.vision.image_size,
            negclip=negclip,
            batch_size=sharding.round_up(batch_size, multiple),
            eval_batch_size=sharding.round_up(eval_batch_size, multiple),
            train_config=train_config,
            tokenizer=tokenizer,
            base_params=base_params,
            resize=resize,
            all_pairs=all_pairs,
            freeze_vision=freeze_vision,
            _train_step=contrastive.make_train_step(
                model, optimizer, mean, std, (state_sh, batch_sh, replicated), FROZEN if freeze_vision else ()),
            **embeddings,
            _gather=jax.jit(_gather, in_shardings=(replicated,) * 4, out_shardings=batch_sh),
            mesh=mesh,
            state_sharding=state_sh,
        )

    # -- state -----------------------------------------------------------------------------------------
    def init_state(self, seed: int = 0) -> dict:
        params = self.base_params
        if params is None:
            params = clip_model.init_params(self.model.config, seed)
        params = sharding.put(params, self.state_sharding["params"])  # fresh buffers: train steps donate them
        optimizer = _optimizer(self.train_config, self.freeze_vision)
        return {"params": params, "opt": jax.jit(optimizer.init, out_shardings=self.state_sharding["opt"])(params),
                "step": sharding.put(np.zeros((), np.int32), self.state_sharding["step"])}

    def place(self, state: dict) -> dict:
        """A state (e.g. restored from a checkpoint as host arrays) placed on the learner's mesh."""
        return sharding.put(state, self.state_sharding)

    # -- helpers ---------------------------------------------------------------------------------------
    def _images(self, images) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise ValueError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")
        if images.shape[1:3] != (self.image_size, self.image_size):
            if self.resize is None:
                raise ValueError(
                    f"images are {images.shape[1]}x{images.shape[2]}, the learner expects "
                    f"{self.image_size}x{self.image_size}"
                )
            images = self.resize(images)
        return images

    def _embed(self, fn, params, arrays: Sequence[np.ndarray], size: int) -> np.ndarray:
        """Apply a jitted embedding in fixed-size chunks (the last one padded) -> numpy [N, D]."""
        n = len(arrays[0])
        out = []
        for start in range(0, n, size):
            chunk = [a[start : start + size] for a in arrays]
            pad = size - len(chunk[0])
            if pad:
                chunk = [np.concatenate([c, np.repeat(c[-1:], pad, axis=0)]) for c in chunk]
            out.append(fn(params, *sharding.put(chunk, sharding.batch_sharding(self.mesh))))
        return np.concatenate([sharding.fetch(o) for o in out])[:n] if out else np.zeros((0, 1), np.float32)

    def image_embeddings(self, params, images) -> np.ndarray:
        """Normalised image embeddings, numpy [N, D]."""
        return self._embed(self._embed_images, params, [self._images(images)], self.eval_batch_size)

    def text_embeddings(self, params, texts: Sequence[str]) -> np.ndarray:
        """Normalised text embeddings, numpy [N, D]."""
        ids, mask = self.tokenizer.encode(texts)
        return self._embed(self._embed_texts, params, [ids, mask], self.eval_batch_size)

    # -- contract --------------------------------------------------------------------------------------
    def evaluate(self, state: dict, images, samples: Sequence[dict]) -> dict:
        images = self._images(images)
        if len(images) != len(samples):
            raise ValueError(f"{len(images)} images but {len(samples)} samples")
        if not samples:
            raise ValueError("evaluate needs at least one sample")
        params = state["params"]
        n = len(samples)
        term_swapped, object_swapped = contrastive.hard_negative_texts(samples)
        image_embeds = self.image_embeddings(params, images)
        text_embeds = self.text_embeddings(params, [s["caption"] for s in samples] + term_swapped + object_swapped)
        texts = text_embeds.reshape(3, n, -1)
        scores = contrastive.hard_negative_scores(image_embeds, texts[0], texts[1:])
        correct = contrastive.hard_negative_correct(scores).astype(np.float64)
        scale = float(np.exp(min(float(params["logit_scale"]), contrastive.MAX_LOGIT_SCALE)))
        columns = text_embeds if self.negclip else texts[0]
        logits = scale * image_embeds.astype(np.float64) @ columns.astype(np.float64).T
        loss, per_sample_loss = contrastive.contrastive_loss(logits, xp=np)
        per_term, per_complexity = contrastive.breakdown(correct, samples)
        return {
            "metric": float(correct.mean()),
            "loss": float(loss),
            "reward": float(loss) ** 2,  # J2 = L^2 (Eq. 3)
            "per_sample_reward": per_sample_loss**2,
            "per_sample_metric": correct,
            "per_term": per_term,
            "per_complexity": per_complexity,
        }

    def finetune(self, state: dict, images, samples: Sequence[dict], k: int, key) -> tuple[dict, list[float]]:
        """k epochs of shuffled minibatches of `batch_size` (the last one of a round padded and masked).

        With `all_pairs`, every sample holding its scene's `metadata` contributes one caption per ordered pair
        of its objects (the same image, several true statements about it). An epoch then runs in rounds, each
        image's captions spread over different rounds, so that no minibatch holds two captions of one image
        (the contrastive loss would count the other one as a wrong caption for it).
        """
        images = self._images(images)
        n, b = len(samples), self.batch_size
        if len(images) != n:
            raise ValueError(f"{len(images)} images but {n} samples")
        if n == 0:
            return state, []
        seed = int(jax.random.randint(key, (), 0, 2**31 - 1))
        rng = np.random.default_rng(seed)
        per_image = [self._fine_tuning_captions(s) for s in samples]
        counts = np.array([len(c) for c in per_image])
        first = np.concatenate([[0], np.cumsum(counts)[:-1]])
        captions = [c for cs in per_image for c in cs]
        columns = [[c["caption"] for c in captions]]
        if self.negclip:
            columns += list(contrastive.hard_negative_texts(captions, rng))
        encoded = [self.tokenizer.encode(c) for c in columns]
        replicated = sharding.replicated(self.mesh)
        # The jitted step donates its state buffers; copy once so the caller's `state` stays valid.
        state = _copy(self.place(state))
        # A frozen tower gives every image the same pooled output in every epoch: run it once.
        pictures = ({"vision_pooled": self._embed(self._pool_images, state["params"], [images], self.eval_batch_size)}
                    if self.freeze_vision and self.cache_vision else {"images": images})
        data = sharding.put(
            {**pictures, "input_ids": np.stack([e[0] for e in encoded]),  # [C, captions, L]
             "attention_mask": np.stack([e[1] for e in encoded])},
            replicated,
        )
        losses = []
        for epoch in range(int(k)):
            turn = [rng.permutation(c) for c in counts]  # each image's captions in a random order
            pending = []
            for r in range(int(counts.max())):
                owners = np.array([i for i in rng.permutation(n) if counts[i] > r])
                rows = first[owners] + np.array([turn[i][r] for i in owners])
                for start in range(0, len(owners), b):
                    image_rows, caption_rows = owners[start : start + b], rows[start : start + b]
                    valid = np.arange(b) < len(image_rows)
                    pad = b - len(image_rows)
                    image_rows = np.concatenate([image_rows, np.full(pad, image_rows[0])])
                    caption_rows = np.concatenate([caption_rows, np.full(pad, caption_rows[0])])
                    batch = self._gather(data, *sharding.put((image_rows, caption_rows, valid), replicated))
                    state, metrics = self._train_step(state, batch)
                    pending.append(metrics["loss"])
            for i, loss in enumerate(jax.device_get(pending)):
                losses.append(contrastive.check_finite(float(loss), f"epoch {epoch} step {i} of finetune"))
        return state, losses

    def _fine_tuning_captions(self, sample: dict) -> list[dict]:
        metadata = sample.get("metadata")
        if not self.all_pairs or metadata is None:
            return [sample]
        count = len(metadata["objects"])
        return [prompts.describe_pair(metadata, i, j) for i in range(count) for j in range(count) if i != j]


def _embedded_parts(base_weights):
    """The embedded default: (config, parameters or None, tokenizer, ((mean, std), resize), learning rate)."""
    base = Path(base_weights) if base_weights is not None else BASE_WEIGHTS
    if base.is_file():
        config, base_params, words = load_base_weights(base)
    else:
        if base_weights is not None:
            raise FileNotFoundError(f"base weights {base} do not exist")
        words, base_params = list(WORDS), None
        config = default_config(ClipWordTokenizer(words).vocab_size)
    tokenizer = ClipWordTokenizer(words, max_length=config.text.max_position_embeddings)
    return config, base_params, tokenizer, ((contrastive.CLIP_MEAN, contrastive.CLIP_STD), None), 3e-4


def _checkpoint_parts(weights, text_length: int):
    """A Hugging Face CLIP directory: the same parts, with its tokenizer and image preprocessing."""
    config, base_params = load_clip_params(weights)
    tokenizer = _HFTokenizer(load_hf_tokenizer(weights), min(text_length, config.text.max_position_embeddings))
    processor = CLIPImagePreprocessor.from_pretrained(weights)
    if processor.crop_size != config.vision.image_size:
        raise ValueError(
            f"{weights}: preprocessor crop_size {processor.crop_size} != model image_size {config.vision.image_size}"
        )
    resize = lambda images: np.stack([processor.center_crop(processor.resize(im)) for im in images])
    return config, base_params, tokenizer, ((tuple(processor.image_mean), tuple(processor.image_std)), resize), 1e-5


def _jitted_embeddings(model: CLIPModel, mean, std, in_shardings, replicated) -> dict:
    """The learner's jitted embedding functions (normalised image / text embeddings, the tower's pooled output)."""
    params_sh, batch_sh = in_shardings

    def embed_images(params, images):
        pixels = contrastive.to_pixel_values(images, mean, std, model.dtype)
        feats = model.apply({"params": params}, pixels, method=CLIPModel.get_image_features)
        return feats / jnp.linalg.norm(feats, axis=-1, keepdims=True)

    def pool_images(params, images):
        pixels = contrastive.to_pixel_values(images, mean, std, model.dtype)
        return model.apply({"params": params}, pixels, method=CLIPModel.pool_images).astype(jnp.float32)

    def embed_texts(params, ids, mask):
        feats = model.apply({"params": params}, ids, mask, method=CLIPModel.get_text_features)
        return feats / jnp.linalg.norm(feats, axis=-1, keepdims=True)

    images = jax.jit(embed_images, in_shardings=(params_sh, batch_sh), out_shardings=replicated)
    pooled = jax.jit(pool_images, in_shardings=(params_sh, batch_sh), out_shardings=replicated)
    texts = jax.jit(embed_texts, in_shardings=(params_sh, batch_sh, batch_sh), out_shardings=replicated)
    return {"_embed_images": images, "_pool_images": pooled, "_embed_texts": texts}


FROZEN = ("vision_model",)  # what freeze_vision holds; its visual projection still trains


def _optimizer(train_config: contrastive.TrainConfig, freeze_vision: bool):
    optimizer = contrastive.make_optimizer(train_config)
    if not freeze_vision:
        return optimizer
    return optax.multi_transform(
        {"train": optimizer, "frozen": optax.set_to_zero()},
        lambda params: {k: "frozen" if k in FROZEN else "train" for k in params},
    )


@jax.jit
def _copy(tree):
    """New buffers with the same shardings."""
    return jax.tree_util.tree_map(jnp.copy, tree)


def _gather(data, image_rows, caption_rows, valid):
    """A minibatch of device-resident fine-tuning data (no host copy per step): images [B, ...] and, for
    every text column, the captions `caption_rows` -> [C * B, L]."""

    def texts(x):  # [C, captions, L] -> [C * B, L]
        return x[:, caption_rows].reshape(-1, x.shape[-1])

    pictures = "vision_pooled" if "vision_pooled" in data else "images"
    return {
        pictures: data[pictures][image_rows],
        "input_ids": texts(data["input_ids"]),
        "attention_mask": texts(data["attention_mask"]),
        "valid": valid,
    }
