"""Reading Hugging Face checkpoint directories without torch: config.json and safetensors, sharded or not.

safetensors files are parsed directly (8-byte little-endian header length, a JSON header, raw little-endian
tensor bytes) and memory-mapped, so bfloat16 tensors load as `ml_dtypes.bfloat16` numpy arrays and a large
checkpoint is only read as far as its tensors are used.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path

import ml_dtypes
import numpy as np

_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": ml_dtypes.bfloat16,
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
SINGLE_FILE = "model.safetensors"
SHARD_INDEX = "model.safetensors.index.json"


def checkpoint_dir(path: str | os.PathLike) -> Path:
    """The directory as a Path, or a clear error if it is not a checkpoint directory."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint directory {path} does not exist")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"checkpoint directory {path} has no config.json")
    return path


def read_config(path: str | os.PathLike) -> dict:
    with open(checkpoint_dir(path) / "config.json") as f:
        return json.load(f)


def read_safetensors_header(file: str | os.PathLike) -> tuple[dict, int]:
    """(header without __metadata__, byte offset where tensor data starts)."""
    with open(file, "rb") as f:
        raw = f.read(8)
        if len(raw) != 8:
            raise ValueError(f"{file} is not a safetensors file (shorter than 8 bytes)")
        (size,) = struct.unpack("<Q", raw)
        try:
            header = json.loads(f.read(size))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{file} is not a safetensors file (bad header: {e})") from None
    header.pop("__metadata__", None)
    return header, 8 + size


def read_safetensors(file: str | os.PathLike) -> dict[str, np.ndarray]:
    """All tensors of one safetensors file as (read-only, memory-mapped) numpy arrays."""
    header, start = read_safetensors_header(file)
    if not header:
        return {}
    data = np.memmap(file, dtype=np.uint8, mode="r")
    out = {}
    for name, info in header.items():
        if info["dtype"] not in _DTYPES:
            raise ValueError(f"{file}: tensor {name} has unsupported dtype {info['dtype']}")
        begin, end = info["data_offsets"]
        dtype = np.dtype(_DTYPES[info["dtype"]])
        shape = tuple(info["shape"])
        if end - begin != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
            raise ValueError(
                f"{file}: tensor {name} has {end - begin} bytes for shape {shape} {info['dtype']}"
            )
        out[name] = data[start + begin : start + end].view(dtype).reshape(shape)
    return out


def safetensors_files(path: str | os.PathLike) -> list[Path]:
    """The weight files of a checkpoint directory: model.safetensors, or the shards its index names."""
    path = checkpoint_dir(path)
    if (path / SHARD_INDEX).is_file():
        with open(path / SHARD_INDEX) as f:
            index = json.load(f)
        shards = sorted(set(index.get("weight_map", {}).values()))
        if not shards:
            raise ValueError(f"{path / SHARD_INDEX} has an empty weight_map")
        missing = [s for s in shards if not (path / s).is_file()]
        if missing:
            raise FileNotFoundError(f"{path / SHARD_INDEX} names shard {missing[0]}, which is missing")
        return [path / s for s in shards]
    if (path / SINGLE_FILE).is_file():
        return [path / SINGLE_FILE]
    others = sorted(path.glob("*.safetensors"))
    if others:
        return others
    hint = " (only PyTorch .bin weights: convert them to safetensors)" if list(path.glob("*.bin")) else ""
    raise FileNotFoundError(f"checkpoint directory {path} has no safetensors weights{hint}")


class LazyWeights(Mapping):
    """name -> numpy array over every safetensors file of a checkpoint; files are mapped on first use."""

    def __init__(self, path: str | os.PathLike):
        self.path = checkpoint_dir(path)
        self._file_of: dict[str, Path] = {}
        for file in safetensors_files(self.path):
            header, _ = read_safetensors_header(file)
            for name in header:
                self._file_of[name] = file
        self._loaded: dict[Path, dict[str, np.ndarray]] = {}

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._file_of:
            raise KeyError(f"checkpoint {self.path} has no tensor {name}")
        file = self._file_of[name]
        if file not in self._loaded:
            self._loaded[file] = read_safetensors(file)
        return self._loaded[file][name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._file_of)

    def __len__(self) -> int:
        return len(self._file_of)
