"""Samples for the VLM: pairing objects into prompts, the fixed validation/test sets, and export.

A sample is the dict of `rls3_jax.prompts.describe_pair` (located, reference, terms, caption, question)
plus the ground-truth `metadata` it came from; images travel beside samples as uint8 [N, H, W, 3].
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from rls3_jax.prompts import describe_pair

VAL_SEED = 1_000_003  # fixed sets are the same for every run, whatever its seed
TEST_SEED = 2_000_003


def describe(metadata: dict, rng: np.random.Generator, subject: str = "random") -> dict:
    """Describe the relation of a primary (located) object to a secondary (reference) one: a random pair (paper
    4.3, drawn after the move), or with subject "moved" the moved object relative to the slot after it, which
    the agent saw before the move (second, with the selected-first observation)."""
    n = len(metadata["objects"])
    if subject == "moved":
        located, reference = metadata["moved"], (metadata["moved"] + 1) % n
    else:
        located, reference = rng.choice(n, size=2, replace=False)
    return {**describe_pair(metadata, int(located), int(reference)), "metadata": metadata}


def generate_fixed_set(split: str, n: int, image_size: int, seed: int) -> tuple[np.ndarray, list[dict]]:
    import sim

    images, metadatas = sim.generate_samples(split, n, seed, image_size=image_size)
    rng = np.random.default_rng(seed)
    return np.asarray(images, dtype=np.uint8), [describe(m, rng) for m in metadatas]


def collect_from_env(env, n: int, seed: int) -> tuple[np.ndarray, list[dict]]:
    """A fixed set from any environment with the simulator's interface (used for Unity): random valid moves."""
    rng = np.random.default_rng(seed)
    env.reset(seed=seed)
    images, samples, steps = [], [], 0
    while len(samples) < n:
        _, _, _, truncated, info = env.step(rng.uniform(-1, 1, size=3).astype(np.float32))
        steps += 1
        if info["valid"]:
            images.append(env.render())
            samples.append(describe(info["metadata"], rng))
        if truncated:
            env.reset()
        if steps > 200 * n:
            raise RuntimeError(f"the environment produced only {len(samples)} valid samples in {steps} random moves")
    return np.stack(images).astype(np.uint8), samples


def load_or_make(cache_dir: Path, name: str, make) -> tuple[np.ndarray, list[dict]]:
    """Generate a fixed set once and cache it (images in .npz, samples in .json) under cache_dir."""
    images_path, samples_path = cache_dir / f"{name}.npz", cache_dir / f"{name}.json"
    if images_path.is_file() and samples_path.is_file():
        with np.load(images_path) as data:
            images = data["images"]
        return images, json.loads(samples_path.read_text())
    images, samples = make()
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = images_path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, images=images)
    tmp.replace(images_path)
    samples_tmp = samples_path.with_suffix(".tmp")
    samples_tmp.write_text(json.dumps([_jsonable(s) for s in samples]))
    samples_tmp.replace(samples_path)
    return images, json.loads(samples_path.read_text())


def _jsonable(sample: dict) -> dict:
    return {**sample, "terms": list(sample["terms"])}


def export(directory: Path, images: np.ndarray, samples: list[dict]) -> Path:
    """Write images as PNG and `metadata.jsonl`, Hugging Face's "imagefolder" layout:
    `datasets.load_dataset("imagefolder", data_dir=directory)` yields `image` and every field of a line
    (file_name, caption, question, answer, terms, located, reference, metadata).

    `metadata` is the sample's ground truth as a JSON string (`json.loads` gives the dict back): read as nested
    columns, datasets fixes their types from the first file, so a later file's 0.5 would come back as 0 once an
    earlier one held a whole number there (a JSON writer may print 1.0 as 1), and a key only some rows hold
    would be added to the others as None.
    """
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / "metadata.jsonl", "w") as lines:
        for i, (image, sample) in enumerate(zip(images, samples)):
            name = f"{i:05d}.png"
            Image.fromarray(np.asarray(image, dtype=np.uint8)).save(directory / name)
            record = {"file_name": name, "caption": sample["caption"], "question": sample["question"],
                      "answer": sample["caption"], "terms": list(sample["terms"]), "located": sample["located"],
                      "reference": sample["reference"], "metadata": json.dumps(sample.get("metadata"))}
            lines.write(json.dumps(record) + "\n")
    return directory


def load_export(directory: Path) -> tuple[np.ndarray, list[dict]]:
    """What `export` wrote, back as images and samples (the PNGs are lossless: the same uint8 images)."""
    lines = (Path(directory) / "metadata.jsonl").read_text().splitlines()
    if not lines:
        raise ValueError(f"{directory}: metadata.jsonl holds no samples")
    images, samples = [], []
    for line in lines:
        record = json.loads(line)
        with Image.open(Path(directory) / record["file_name"]) as image:
            images.append(np.asarray(image.convert("RGB"), dtype=np.uint8))
        samples.append({"located": record["located"], "reference": record["reference"], "terms": record["terms"],
                        "caption": record["caption"], "question": record["question"],
                        "metadata": json.loads(record["metadata"])})
    return np.stack(images), samples
