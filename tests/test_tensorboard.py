import pytest

from rls3_jax.tensorboard import SummaryWriter, crc32c, read_scalars


def test_crc32c_known_value():
    assert crc32c(b"123456789") == 0xE3069283


def test_scalars_round_trip(tmp_path):
    writer = SummaryWriter(tmp_path)
    writer.scalars(1, {"test_metric": 2.5, "nan_is_dropped": float("nan"), "text_is_dropped": "x"})
    writer.scalars(2, {"test_metric": 3.0, "valid_fraction": 0.75})
    writer.close()
    assert read_scalars(writer.path) == [(1, "test_metric", 2.5), (2, "test_metric", 3.0), (2, "valid_fraction", 0.75)]


def test_tensorboard_itself_reads_the_file(tmp_path):
    event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator")
    writer = SummaryWriter(tmp_path)
    for step in range(3):
        writer.scalars(step, {"val_metric": step / 2})
    writer.close()
    acc = event_accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("val_metric")] == [(0, 0.0), (1, 0.5), (2, 1.0)]


def test_corruption_is_detected(tmp_path):
    writer = SummaryWriter(tmp_path)
    writer.scalars(1, {"a": 1.0})
    writer.close()
    data = bytearray(writer.path.read_bytes())
    data[-6] ^= 0xFF
    writer.path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt"):
        read_scalars(writer.path)
