"""safetensors reading without torch: dtypes (bf16 included), shards, clear errors."""

import json
import struct

import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from rls3_jax.vlm import hf_weights


def _write_raw(path, tensors):
    """A safetensors file written by hand (safetensors.numpy cannot write bfloat16)."""
    header, blobs, offset = {}, [], 0
    for name, (dtype, array) in tensors.items():
        raw = array.tobytes()
        header[name] = {
            "dtype": dtype,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + len(raw)],
        }
        blobs.append(raw)
        offset += len(raw)
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(blobs))


def test_reads_bf16_and_sharded_checkpoints(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    w = np.arange(6, dtype=np.float32).reshape(2, 3).astype(ml_dtypes.bfloat16)
    _write_raw(tmp_path / "a.safetensors", {"w": ("BF16", w)})
    save_file({"b": np.ones((4,), np.float16)}, str(tmp_path / "b.safetensors"))
    index = {"weight_map": {"w": "a.safetensors", "b": "b.safetensors"}}
    (tmp_path / hf_weights.SHARD_INDEX).write_text(json.dumps(index))
    weights = hf_weights.LazyWeights(tmp_path)
    assert sorted(weights) == ["b", "w"]
    assert weights["w"].dtype == ml_dtypes.bfloat16 and weights["w"].shape == (2, 3)
    np.testing.assert_array_equal(weights["w"].astype(np.float32), np.arange(6).reshape(2, 3))
    assert weights["b"].dtype == np.float16
    with pytest.raises(KeyError, match="no tensor nope"):
        weights["nope"]


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        hf_weights.LazyWeights(tmp_path / "missing")
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / hf_weights.SHARD_INDEX).write_text(json.dumps({"weight_map": {"w": "gone.safetensors"}}))
    with pytest.raises(FileNotFoundError, match="gone.safetensors"):
        hf_weights.LazyWeights(tmp_path)
    (tmp_path / hf_weights.SHARD_INDEX).unlink()
    (tmp_path / "model.safetensors").write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00notjs")
    with pytest.raises(ValueError, match="model.safetensors is not a safetensors file"):
        hf_weights.LazyWeights(tmp_path)
