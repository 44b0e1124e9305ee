"""`rls3_jax.datasets.export` writes what Hugging Face `datasets` reads as an "imagefolder" dataset."""

import copy
import json

import numpy as np
import pytest

from rls3_jax import datasets as rls3_datasets


@pytest.fixture
def hf_datasets(tmp_path, monkeypatch):
    """Hugging Face `datasets`, offline, caching under tmp_path (nothing written to home)."""
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    return pytest.importorskip("datasets")


def _load(hf_datasets, data_dir, cache_dir):
    return hf_datasets.load_dataset("imagefolder", data_dir=str(data_dir), cache_dir=str(cache_dir))["train"]


def test_imagefolder_yields_every_field_and_the_pixels(tmp_path, hf_datasets):
    images, samples = rls3_datasets.generate_fixed_set("val", 5, 32, seed=3)
    rls3_datasets.export(tmp_path / "data", images, samples)
    rows = _load(hf_datasets, tmp_path / "data", tmp_path / "cache")
    assert len(rows) == len(samples)
    assert set(rows.column_names) == {"image", "caption", "question", "answer", "terms", "located", "reference",
                                      "metadata"}
    for row, image, sample in zip(rows, images, samples):
        np.testing.assert_array_equal(np.asarray(row["image"].convert("RGB")), image)
        assert row["caption"] == row["answer"] == sample["caption"]
        assert row["question"] == sample["question"]
        assert row["terms"] == list(sample["terms"])
        assert (row["located"], row["reference"]) == (sample["located"], sample["reference"])
        assert json.loads(row["metadata"]) == sample["metadata"]


def test_iterations_load_together_with_their_metadata_exact(tmp_path, hf_datasets):
    images, samples = rls3_datasets.generate_fixed_set("val", 4, 32, seed=4)
    whole, half = copy.deepcopy(samples[:2]), copy.deepcopy(samples[2:])
    for sample in whole:  # as a JSON writer that prints 1.0 as 1 would send them
        sample["metadata"]["camera"]["position"] = [0, 2, -1]
    for sample in half:
        sample["metadata"]["camera"]["position"] = [0.5, 2.25, -1.5]
        sample["metadata"]["lighting"] = {"lamp": "on"}  # a key only these rows hold
    rls3_datasets.export(tmp_path / "data" / "iteration_0001", images[:2], whole)
    rls3_datasets.export(tmp_path / "data" / "iteration_0002", images[2:], half)
    rows = _load(hf_datasets, tmp_path / "data", tmp_path / "cache")
    loaded = [(r["caption"], json.loads(r["metadata"])) for r in rows]
    assert sorted(loaded, key=repr) == sorted(((s["caption"], s["metadata"]) for s in whole + half), key=repr)
