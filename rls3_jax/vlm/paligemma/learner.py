"""The PaliGemma learner of the RLS3 loop: question "What is the position of A relative to B?", the caption as
answer, answers scored by the rubric (paper sections 3.2, 4.3, 4.4).

`PaliGemmaLearner.create()` gives the embedded default: a small PaliGemma-architecture model with a closed
word vocabulary, starting from the base weights shipped in rls3_jax/assets/ (pretrained on naming the objects
of the training scenes; see pretrain.py) or from a random init when they are absent.
`create(path)` loads a real Hugging Face PaliGemma checkpoint with its own tokenizer. `grounded=True` teaches, and
asks for, both objects' boxes in PaliGemma's detection format before the caption (detection.grounded_answer).
The object holds no mutable state: parameters and optimiser state live in the `state` pytree.
"""

from __future__ import annotations

import dataclasses
import json
import math
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict, unflatten_dict

from rls3_jax import sharding
from rls3_jax.scoring import paligemma_reward, rubric_score
from rls3_jax.vlm.paligemma import decode as decoding
from rls3_jax.vlm.paligemma import detection
from rls3_jax.vlm.paligemma import train as paligemma_train
from rls3_jax.vlm.paligemma.inputs import (
    HFPrompts,
    ImageSpec,
    WordPrompts,
    normalise,
    preprocess_images,
    resize_images,
    sequence_length,
    training_batch,
)
from rls3_jax.vlm.paligemma.model import PaliGemma, PaliGemmaConfig, TextConfig, VisionConfig, init_params
from rls3_jax.vlm.paligemma.tokenizer import WordTokenizer
from rls3_jax.vlm.paligemma.weights import from_pretrained

ASSETS = Path(__file__).resolve().parents[2] / "assets"
BASE_WEIGHTS = ASSETS / "paligemma_base.safetensors"
BASE_CONFIG = ASSETS / "paligemma_base.json"
# The shipped base's render size, patch size and patches merged per image token (side of the block).
EMBEDDED_IMAGE_SIZE, EMBEDDED_PATCH_SIZE, EMBEDDED_IMAGE_TOKEN_MERGE = 96, 8, 2
EMBEDDED_VISION_LAYERS = 6  # 3 localised worse in every split (docs/paligemma.md, "A deeper vision tower")


def embedded_config(vocab_size: int, dtype: str = "float32", image_size: int = EMBEDDED_IMAGE_SIZE,
                    patch_size: int = EMBEDDED_PATCH_SIZE,
                    image_token_merge: int = EMBEDDED_IMAGE_TOKEN_MERGE,
                    vision_layers: int = EMBEDDED_VISION_LAYERS) -> PaliGemmaConfig:
    """The small default: 96 px images in 8 px patches (144 for the tower), 2 x 2 of them merged into each of
    the language model's 36 image tokens; multi-query Gemma.

    96 px rather than 64: the objects are about 8 px wide (median) instead of 3-5; 8 px patches localise them
    better than 16 px ones, and merging keeps the language model's sequence short, which is where the loop spends
    its time (docs/paligemma.md).
    """
    return PaliGemmaConfig(
        vision=VisionConfig(
            image_size=image_size, patch_size=patch_size, hidden_size=128, intermediate_size=256,
            num_hidden_layers=vision_layers,
            num_attention_heads=4,
        ),
        text=TextConfig(
            vocab_size=vocab_size, hidden_size=128, intermediate_size=512, num_hidden_layers=4,
            num_attention_heads=4, num_key_value_heads=1, head_dim=32,
        ),
        image_token_index=3,  # WordTokenizer's <image>
        pad_token_id=0, eos_token_id=1, bos_token_id=2, dtype=dtype, image_token_merge=image_token_merge,
    )


def save_base(path_weights: Path, path_config: Path, params, config: PaliGemmaConfig, tokenizer: WordTokenizer, info: dict):
    """Embedded base weights: flat safetensors (float32) + JSON (config, vocabulary, how they were made)."""
    from safetensors.numpy import save_file

    flat = {"/".join(p): np.asarray(v, np.float32) for p, v in flatten_dict(jax.device_get(params)).items()}
    path_weights.parent.mkdir(parents=True, exist_ok=True)
    save_file(flat, str(path_weights))
    payload = {"config": config.replace(dtype="float32").to_dict(), "words": json.loads(tokenizer.to_json())["words"], "info": info}
    path_config.write_text(json.dumps(payload, indent=1))


def load_base(path_weights: Path = BASE_WEIGHTS, path_config: Path = BASE_CONFIG):
    """(config, params, tokenizer, info) of embedded base weights."""
    from safetensors.numpy import load_file

    payload = json.loads(Path(path_config).read_text())
    config = PaliGemmaConfig.from_dict(payload["config"])
    tokenizer = WordTokenizer(payload["words"])
    params = unflatten_dict({tuple(k.split("/")): v for k, v in load_file(str(path_weights)).items()})
    template = flatten_dict(jax.eval_shape(lambda: init_params(config)[1]))
    for p, v in flatten_dict(params).items():
        if p not in template or template[p].shape != v.shape:
            raise ValueError(f"{path_weights}: parameter {'/'.join(p)} {v.shape} does not fit the config in {path_config}")
    return config, params, tokenizer, payload.get("info", {})


def _default_dtype() -> str:
    return "float32" if jax.default_backend() == "cpu" else "bfloat16"


@dataclasses.dataclass(frozen=True, eq=False)
class PaliGemmaLearner:
    model: PaliGemma
    prompts: Any  # WordPrompts or HFPrompts
    image_spec: ImageSpec
    base_params: Any
    labels: Any
    tx: Any
    full_finetune: bool
    eval_batch_size: int
    train_batch_size: int
    max_new_tokens: int
    train_step: Any
    decoder: Any
    nll: Any
    mesh: Any  # jax.sharding.Mesh: where state and batches live (one device: a trivial mesh)
    state_sharding: Any  # {"params", "opt", "step"} tree of NamedShardings (the fsdp rule)
    gather: Any  # jitted (set, indices) -> minibatch sharded over the mesh, padding rows weighted 0
    embed_images: Any  # jitted (params, uint8 images) -> image tokens through the vision tower and projector
    cache_image_features: bool = True  # frozen vision tower: compute each image's tokens once per fine-tuning set
    grounded: bool = False  # answer with both objects' boxes before the caption (detection.grounded_answer)
    photometric: float = 0.0  # strength of a fixed photometric jitter of every fine-tuning image (0: none)
    name: str = "paligemma"

    @property
    def image_size(self) -> int:
        return self.image_spec.size

    @property
    def config(self) -> PaliGemmaConfig:
        return self.model.config

    @classmethod
    def create(
        cls,
        weights: str | None = None,
        *,
        seed: int = 0,
        full_finetune: bool = False,
        learning_rate: float | None = None,
        eval_batch_size: int = 32,
        train_batch_size: int = 16,
        max_new_tokens: int | None = None,
        dtype: str | None = None,
        base_weights: bool = True,
        mesh=None,
        param_dtype: str = "float32",
        grounded: bool = False,
        photometric: float = 0.0,
    ) -> PaliGemmaLearner:
        """weights=None: the embedded default (base weights from rls3_jax/assets/ when present and
        `base_weights`, else a random init from `seed`); a path: a Hugging Face PaliGemma directory.
        mesh: a rls3_jax.sharding mesh (default: all devices on `data`); param_dtype "bfloat16" stores the
        frozen parameters in bf16 (trained ones keep float32 master weights); dtype is the compute dtype.
        grounded: fine-tune on, and answer with, both objects' boxes before the caption (needs samples with
        metadata); the rubric reads only the answer's spatial words. photometric: fine-tune on the images under a
        fixed brightness / contrast / colour / noise jitter of that strength (`training_images`)."""
        dtype = dtype or _default_dtype()
        options = dict(
            full_finetune=full_finetune, learning_rate=learning_rate, eval_batch_size=eval_batch_size,
            train_batch_size=train_batch_size, max_new_tokens=max_new_tokens, mesh=mesh, param_dtype=param_dtype,
            grounded=grounded, photometric=photometric,
        )
        if weights is None:
            if base_weights and BASE_WEIGHTS.is_file() and BASE_CONFIG.is_file():
                config, params, tokenizer, _ = load_base()
            else:
                from sim import OBJECT_NAMES  # the catalogue's names make up the closed vocabulary

                tokenizer = WordTokenizer.for_objects(OBJECT_NAMES)
                config = embedded_config(len(tokenizer))
                params = init_params(config, seed)[1]
            return cls.from_parts(config.replace(dtype=dtype), params, tokenizer, **options)
        model, params = from_pretrained(weights, dtype=dtype)
        spec = ImageSpec.from_preprocessor_config(Path(weights) / "preprocessor_config.json", model.config.vision.image_size)
        options["learning_rate"] = learning_rate or 1e-5
        options["max_new_tokens"] = max_new_tokens or (64 if grounded else 32)
        return cls._assemble(model, params, HFPrompts(weights), spec, **options)

    @classmethod
    def from_parts(cls, config: PaliGemmaConfig, params, tokenizer: WordTokenizer, **options) -> PaliGemmaLearner:
        """A word-tokenizer learner from a config, parameters and vocabulary (the embedded default's pieces)."""
        options["learning_rate"] = options.get("learning_rate") or 2e-3
        options["max_new_tokens"] = options.get("max_new_tokens") or (44 if options.get("grounded") else 20)
        spec = ImageSpec(config.vision.image_size)
        return cls._assemble(PaliGemma(config), params, WordPrompts(tokenizer), spec, **options)

    @classmethod
    def _assemble(
        cls, model, params, prompts, spec, *, full_finetune=False, learning_rate, eval_batch_size=32,
        train_batch_size=16, max_new_tokens, mesh=None, param_dtype="float32", cache_image_features=True,
        grounded=False, photometric=0.0,
    ) -> PaliGemmaLearner:
        if param_dtype not in ("float32", "bfloat16"):
            raise ValueError(f"PaliGemma param_dtype {param_dtype!r} is not float32 or bfloat16")
        if not 0.0 <= photometric < math.inf:
            raise ValueError(f"PaliGemma photometric jitter strength {photometric} is not a number >= 0")
        # Host copies: init_state places them on the mesh (no whole model on one device first).
        params = jax.tree.map(lambda x: np.asarray(x, np.float32), params)
        tx, labels = paligemma_train.make_optimizer(params, learning_rate, full_finetune)
        if param_dtype == "bfloat16":
            params = jax.tree.map(lambda x, label: x if label == "trainable" else x.astype(jnp.bfloat16), params, labels)
        mesh = mesh or sharding.make_mesh()
        shapes = jax.eval_shape(lambda p: {"params": p, "opt": tx.init(p), "step": jnp.zeros((), jnp.int32)}, params)
        state_sh = sharding.param_sharding(mesh, shapes)
        batch_sh, replicated = sharding.batch_sharding(mesh), sharding.replicated(mesh)
        multiple = sharding.batch_multiple(mesh)
        padded = sharding.round_up(train_batch_size, multiple)

        def gather(data, idx):
            batch = {k: v[idx] for k, v in data.items()}
            if "images" in batch:  # uint8 on the device; normalised per minibatch
                batch["pixel_values"] = normalise(batch.pop("images"), spec)
            keep = (jnp.arange(padded) < train_batch_size).astype(batch["token_type_ids"].dtype)
            batch["token_type_ids"] = batch["token_type_ids"] * keep[:, None]  # padding rows: no answer tokens
            return batch

        c = model.config
        return cls(
            model=model,
            prompts=prompts,
            image_spec=spec,
            base_params=params,
            labels=labels,
            tx=tx,
            full_finetune=full_finetune,
            eval_batch_size=sharding.round_up(eval_batch_size, multiple),
            train_batch_size=train_batch_size,
            max_new_tokens=max_new_tokens,
            train_step=paligemma_train.make_train_step(
                model, tx, labels, (state_sh["params"], state_sh["opt"], batch_sh, replicated)),
            decoder=decoding.make_greedy_decoder(model, max_new_tokens, c.eos_token_id, c.pad_token_id,
                                                 (state_sh["params"], batch_sh, replicated)),
            nll=jax.jit(lambda params, batch: paligemma_train.answer_nll(model, params, batch)[0],
                        in_shardings=(state_sh["params"], batch_sh), out_shardings=replicated),
            mesh=mesh,
            state_sharding=state_sh,
            gather=jax.jit(gather, in_shardings=(replicated, replicated), out_shardings=batch_sh),
            embed_images=jax.jit(lambda params, images: model.apply({"params": params}, normalise(images, spec),
                                                                    method=PaliGemma.embed_image),
                                 in_shardings=(state_sh["params"], batch_sh), out_shardings=replicated),
            cache_image_features=cache_image_features and not full_finetune,
            grounded=grounded,
            photometric=float(photometric),
        )

    # ------------------------------------------------------------------------------------------- state

    def init_state(self, seed: int = 0) -> dict:
        """{"params", "opt", "step"} on the mesh; `seed` is unused (the starting weights are the learner's),
        kept for the contract."""
        del seed
        sh = self.state_sharding
        params = sharding.put(self.base_params, sh["params"])  # fresh device arrays: train steps donate them
        opt = jax.jit(self.tx.init, out_shardings=sh["opt"])(params)
        return {"params": params, "opt": opt, "step": sharding.put(np.zeros((), np.int32), sh["step"])}

    def place(self, state) -> dict:
        """A state (e.g. restored from a checkpoint as host arrays) placed on the learner's mesh."""
        return sharding.put(state, self.state_sharding)

    # ------------------------------------------------------------------------------------------- inputs

    def _batch(self, images, questions, answers, length: int) -> dict:
        n_img = self.config.num_image_tokens
        batch = training_batch(self.prompts, n_img, questions, answers, length)
        batch["pixel_values"] = preprocess_images(images, self.image_spec)
        return {k: np.asarray(v) for k, v in batch.items()}  # host arrays; callers place them on the mesh

    def answer(self, state, images, questions: Sequence[str]) -> list[str]:
        """Greedy answers, in fixed batches of eval_batch_size (the last one padded)."""
        n = len(questions)
        if len(images) != n:
            raise ValueError(f"{len(images)} images for {n} questions")
        prefixes = [[self.prompts.image_id] * self.config.num_image_tokens + self.prompts.prefix(q) for q in questions]
        length = decoding.bucket_length(max(len(p) for p in prefixes))
        pixels = preprocess_images(np.asarray(images), self.image_spec)
        answers = []
        for start in range(0, n, self.eval_batch_size):
            idx = _padded_indices(start, n, self.eval_batch_size)
            ids, mask = decoding.left_pad([prefixes[i] for i in idx], length, self.prompts.pad_id)
            inputs = sharding.put((ids, np.asarray(pixels[idx]), mask), sharding.batch_sharding(self.mesh))
            tokens, _ = self.decoder(state["params"], *inputs)
            tokens = sharding.fetch(tokens)
            for row in range(min(self.eval_batch_size, n - start)):
                kept = decoding.strip_answer(tokens[row], self.config.eos_token_id, self.config.pad_token_id)
                answers.append(self.prompts.decode(kept))
        return answers

    def answer_nll(self, state, images, questions, answers) -> np.ndarray:
        """Per-sample answer-token NLL under teacher forcing [N]."""
        n = len(questions)
        length = sequence_length(self.prompts, self.config.num_image_tokens, questions, answers)
        out = []
        for start in range(0, n, self.eval_batch_size):
            idx = _padded_indices(start, n, self.eval_batch_size)
            batch = self._batch(np.asarray(images)[idx], [questions[i] for i in idx], [answers[i] for i in idx], length)
            batch = sharding.put(batch, sharding.batch_sharding(self.mesh))
            out.append(sharding.fetch(self.nll(state["params"], batch))[: min(self.eval_batch_size, n - start)])
        return np.concatenate(out)

    # ------------------------------------------------------------------------------------------- contract

    def evaluate(self, state, images, samples: Sequence[dict]) -> dict:
        questions = [s["question"] for s in samples]
        answers = self.answer(state, images, questions)
        scores = np.array([rubric_score(s["terms"], a) for s, a in zip(samples, answers)], np.float64)
        nll = self.answer_nll(state, images, questions, [self.target(s) for s in samples])
        per_term, per_complexity = {}, {}
        for term in ("above", "below", "behind", "in front", "left", "right"):
            sel = [i for i, s in enumerate(samples) if term in s["terms"]]
            if sel:
                per_term[term] = float(scores[sel].mean())
        for k in (1, 2, 3):
            sel = [i for i, s in enumerate(samples) if len(s["terms"]) == k]
            if sel:
                per_complexity[k] = float(scores[sel].mean())
        mean = float(scores.mean())
        return {
            "metric": mean,
            "loss": float(nll.mean()),
            "reward": paligemma_reward(mean),
            "per_sample_reward": (6.0 - scores) ** 2,
            "per_sample_metric": scores,
            "per_term": per_term,
            "per_complexity": per_complexity,
            "answers": answers,
        }

    def finetune(self, state, images, samples: Sequence[dict], k: int, key, encoded=None) -> tuple[dict, list[float]]:
        """k steps on minibatches of train_batch_size drawn (with replacement) from the set; `encoded`: the
        images' `encode_images`, computed once by a caller that fine-tunes on them again and again."""
        questions = [s["question"] for s in samples]
        return self.finetune_on(state, images, questions, [self.target(s) for s in samples], k, key, encoded)

    def encode_images(self, state, images: np.ndarray) -> jax.Array | None:
        """The frozen vision tower's and projector's image tokens of (uint8) images, for `finetune(encoded=)`.

        They stay valid for the whole run, since fine-tuning never changes those parameters; None when it does
        (`full_finetune`): then every call must run the tower on the images with the current parameters."""
        if not self.cache_image_features:
            return None
        params = sharding.put(state["params"], self.state_sharding["params"])
        return self._image_features(params, resize_images(self.training_images(images), self.image_spec))[: len(images)]

    def training_images(self, images: np.ndarray) -> np.ndarray:
        """What fine-tuning sees of (uint8) images: with `photometric`, each under a random brightness, contrast,
        colour and noise change (sim.augment.photometric) seeded by its own pixels, so that the same image looks
        the same in every iteration, resumed or not, cached or not. A lever measured outside the loop
        (`bench/paligemma_heldout.py --photometric`, docs/paligemma.md); the loop fine-tunes on the images as they are."""
        images = np.asarray(images)
        if self.photometric <= 0:
            return images
        from sim.augment import photometric

        return np.stack([photometric(image[None], np.random.default_rng(zlib.crc32(image.tobytes())),
                                     self.photometric)[0] for image in images])

    def target(self, sample: dict) -> str:
        """The answer a sample teaches: its caption, or with `grounded` the boxes and then the caption."""
        return detection.grounded_answer(sample) if self.grounded else sample["caption"]

    def finetune_on(self, state, images, questions, answers, k: int, key, encoded=None) -> tuple[dict, list[float]]:
        n = len(questions)
        if n == 0 or k <= 0:
            return state, []
        if encoded is not None and (not self.cache_image_features or encoded.shape[0] != n):
            raise ValueError(f"encoded image tokens of shape {encoded.shape} for {n} samples"
                             + ("" if self.cache_image_features else " of a learner whose vision tower trains"))
        length = sequence_length(self.prompts, self.config.num_image_tokens, questions, answers)
        replicated = sharding.replicated(self.mesh)
        # Copies: the train step donates its inputs, and the caller's state must stay usable.
        sh = self.state_sharding
        params, opt = _copy(sharding.put((state["params"], state["opt"]), (sh["params"], sh["opt"])))
        host = training_batch(self.prompts, self.config.num_image_tokens, questions, answers, length)
        if encoded is None:  # the frozen tower's tokens cannot change in k steps: computed once for the set
            encoded = self.encode_images(state, images)
        if encoded is None:  # the tower trains
            host["images"] = resize_images(self.training_images(images), self.image_spec)  # uint8: normalised on the device
        data = sharding.put(host, replicated)  # the set goes to the devices once
        if encoded is not None:
            data["image_features"] = encoded
        draw = lambda step_key: jax.random.randint(step_key, (self.train_batch_size,), 0, n)
        indices = np.asarray(jax.vmap(draw)(jax.random.split(key, k)))  # [k, B]: one small host copy
        padded = sharding.round_up(self.train_batch_size, sharding.batch_multiple(self.mesh))
        indices = np.pad(indices, ((0, 0), (0, padded - self.train_batch_size)))  # rows the gather weights 0
        losses = []
        for idx in indices:
            minibatch = self.gather(data, sharding.put(idx.astype(np.int32), replicated))
            params, opt, loss = self.train_step(params, opt, minibatch)
            losses.append(loss)
        losses = [float(x) for x in jax.device_get(losses)]
        bad = [i for i, x in enumerate(losses) if not math.isfinite(x)]
        if bad:
            raise FloatingPointError(f"PaliGemma fine-tuning loss became {losses[bad[0]]} at step {bad[0]} of {k}")
        return {"params": params, "opt": opt, "step": state["step"] + k}, losses

    def _image_features(self, params, images: np.ndarray) -> jax.Array:
        """Image tokens of every (uint8) image in the set, eval_batch_size at a time (fixed shapes: one compile).

        The last chunk is padded with repeats; its extra rows sit past the set's n and are never drawn."""
        n, parts = images.shape[0], []
        for start in range(0, n, self.eval_batch_size):
            chunk = sharding.put(images[_padded_indices(start, n, self.eval_batch_size)],
                                 sharding.batch_sharding(self.mesh))
            parts.append(self.embed_images(params, chunk))
        return _concatenate(parts)


_concatenate = jax.jit(jnp.concatenate)  # jitted: also for arrays spread over several processes


@jax.jit
def _copy(tree):
    """New buffers with the same shardings (the train step donates its inputs)."""
    return jax.tree.map(jnp.copy, tree)


def _padded_indices(start: int, n: int, batch: int) -> np.ndarray:
    """Indices start..start+batch, the ones past n repeating sample `start` (fixed batch shapes)."""
    idx = np.arange(start, start + batch)
    return np.where(idx < n, idx, start)
