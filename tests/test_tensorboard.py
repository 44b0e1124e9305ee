import io
import time

import numpy as np
import pytest
from PIL import Image

from rls3_jax.tensorboard import FLUSH_SECONDS, SAMPLES_PER_STEP, SummaryWriter, read_scalars

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")


def accumulator(logdir) -> event_accumulator.EventAccumulator:
    acc = event_accumulator.EventAccumulator(str(logdir), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def text_summaries(acc, tag: str) -> list[tuple[int, str]]:
    return [(e.step, e.tensor_proto.string_val[0].decode()) for e in acc.Tensors(f"{tag}/text_summary")]


def test_scalars_round_trip(tmp_path):
    writer = SummaryWriter(tmp_path)
    writer.scalars(1, {"test_metric": 2.5, "nan_is_dropped": float("nan"), "text_is_dropped": "x"})
    writer.scalars(2, {"test_metric": 3.0, "valid_fraction": 0.75})
    writer.close()
    assert read_scalars(writer.path) == [(1, "test_metric", 2.5), (2, "test_metric", 3.0), (2, "valid_fraction", 0.75)]


def test_tensorboard_itself_reads_the_file(tmp_path):
    writer = SummaryWriter(tmp_path)
    for step in range(3):
        writer.scalars(step, {"val_metric": step / 2})
    writer.close()
    acc = event_accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("val_metric")] == [(0, 0.0), (1, 0.5), (2, 1.0)]


def test_events_reach_the_disk_before_close(tmp_path):
    writer = SummaryWriter(tmp_path)
    writer.scalars(4, {"a": 1.0})
    deadline = time.monotonic() + FLUSH_SECONDS + 10  # a killed run keeps what it logged
    while read_scalars(writer.path) != [(4, "a", 1.0)] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert read_scalars(writer.path) == [(4, "a", 1.0)]
    writer.close()


def test_corruption_is_detected(tmp_path):
    writer = SummaryWriter(tmp_path)
    writer.scalars(1, {"a": 1.0})
    writer.close()
    data = bytearray(writer.path.read_bytes())
    data[-6] ^= 0xFF
    writer.path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        read_scalars(writer.path)


def test_writers_in_one_directory_keep_their_own_files(tmp_path):
    first = SummaryWriter(tmp_path)
    first.scalars(0, {"a": 1.0})
    first.close()
    second = SummaryWriter(tmp_path)  # e.g. a resumed run, within the same second
    second.scalars(1, {"a": 2.0})
    second.close()
    assert first.path != second.path
    assert read_scalars(first.path) == [(0, "a", 1.0)] and read_scalars(second.path) == [(1, "a", 2.0)]


def test_settings_are_a_markdown_table(tmp_path):
    writer = SummaryWriter(tmp_path)
    writer.settings({"seed": 3, "vlm": "clip", "weak_terms": ["above", "below"], "note": "a|b"})
    writer.close()
    ((step, table),) = text_summaries(accumulator(tmp_path), "settings")
    assert step == 0
    assert table.splitlines() == ["| setting | value |", "|---|---|", "| seed | 3 |", "| vlm | clip |",
                                  '| weak_terms | ["above", "below"] |', "| note | a\\|b |"]


def test_samples_log_the_first_images_with_their_captions_and_answers(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (SAMPLES_PER_STEP + 2, 8, 6, 3), dtype=np.uint8)
    captions = [f"the cup is left of chair {i}" for i in range(len(images))]
    answers = [f"answer {i}" for i in range(len(images))]
    writer = SummaryWriter(tmp_path)
    writer.samples(7, images, captions, answers)
    writer.close()
    acc = accumulator(tmp_path)
    assert sorted(acc.Tags()["images"]) == [f"samples/image_{i}" for i in range(SAMPLES_PER_STEP)]
    for i in range(SAMPLES_PER_STEP):
        (event,) = acc.Images(f"samples/image_{i}")
        assert event.step == 7 and (event.height, event.width) == (8, 6)
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(event.encoded_image_string))), images[i])
    ((step, table),) = text_summaries(acc, "samples/captions")
    assert step == 7
    rows = table.splitlines()[2:]
    assert rows == [f"| {i} | {captions[i]} | {answers[i]} |" for i in range(SAMPLES_PER_STEP)]


def test_samples_without_answers_and_bad_shapes(tmp_path):
    writer = SummaryWriter(tmp_path)
    writer.samples(0, np.zeros((1, 4, 4, 3), np.uint8), ["a caption"])
    with pytest.raises(ValueError, match="uint8"):
        writer.samples(1, np.zeros((1, 4, 4, 3), np.float32), ["a caption"])
    with pytest.raises(ValueError, match="2 images, 1 captions"):
        writer.samples(1, np.zeros((2, 4, 4, 3), np.uint8), ["a caption"])
    writer.close()
    ((_, table),) = text_summaries(accumulator(tmp_path), "samples/captions")
    assert table.splitlines()[2:] == ["| 0 | a caption |  |"]
