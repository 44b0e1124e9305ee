"""Base-weight pre-training of the embedded default CLIP (naming plus the discarded position head)."""

import numpy as np
import pytest

from rls3_jax.vlm.clip import pretrain as pretrain_clip
from rls3_jax.vlm.clip.learner import ClipLearner

sim = pytest.importorskip("sim")


def test_image_positions_mark_the_three_objects_of_each_sample():
    _, metadatas = sim.generate_samples("train", 6, 0, image_size=96)
    places, present = pretrain_clip.image_positions(metadatas, 96)
    assert places.shape == (6, len(sim.OBJECT_NAMES), 3) and present.shape == (6, len(sim.OBJECT_NAMES))
    np.testing.assert_array_equal(present.sum(1), 3)
    assert np.all(places[present == 0] == 0) and np.all(places[present == 1][:, 2] > 0)  # 1 / distance
    for m, row in zip(metadatas, present):
        assert {sim.OBJECT_NAMES[k] for k in np.flatnonzero(row)} == {o["name"] for o in m["objects"]}


def test_pretraining_learns_both_tasks_and_its_file_loads(tmp_path):
    config, params, meta = pretrain_clip.pretrain(seed=0, samples=256, epochs=3, batch_size=32, log=lambda _: None)
    assert meta["epoch_losses"][-1] < meta["epoch_losses"][0]
    assert meta["epoch_position_losses"][-1] < meta["epoch_position_losses"][0]
    assert len(meta["val_position_r2"]) == 3 and all(np.isfinite(meta["val_position_r2"]))
    assert "head" not in params and set(params) >= {"vision_model", "text_model"}
    out = pretrain_clip.save_base_weights(tmp_path / "base.safetensors", config, params, meta)
    learner = ClipLearner.create(base_weights=out, batch_size=8, eval_batch_size=8)
    images, metadatas = sim.generate_samples("val", 8, 1, image_size=learner.image_size)
    result = learner.evaluate(learner.init_state(0), images, pretrain_clip.pair_samples(metadatas, 1))
    assert np.isfinite(result["loss"])
