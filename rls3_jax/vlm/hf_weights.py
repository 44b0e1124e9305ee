"""Reading Hugging Face checkpoint directories without torch: config.json and safetensors, sharded or not.

safetensors files are read with `safetensors.safe_open` (numpy framework), one tensor at a time, so a large
checkpoint is only read as far as its tensors are used; bfloat16 tensors load as `ml_dtypes.bfloat16` numpy
arrays.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

import ml_dtypes  # noqa: F401  (registers bfloat16 with numpy: safe_open's numpy arrays need it for BF16)
import numpy as np
from safetensors import SafetensorError, safe_open

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


def _open(file: Path):
    """safe_open with a clear error for a file that is not safetensors."""
    try:
        return safe_open(str(file), framework="numpy")
    except SafetensorError as e:
        raise ValueError(f"{file} is not a safetensors file ({e})") from None


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
    """name -> numpy array over every safetensors file of a checkpoint; a tensor is read when it is asked for."""

    def __init__(self, path: str | os.PathLike):
        self.path = checkpoint_dir(path)
        self._file_of: dict[str, Path] = {}
        for file in safetensors_files(self.path):
            with _open(file) as f:
                for name in f.keys():
                    self._file_of[name] = file

    def __getitem__(self, name: str) -> np.ndarray:
        if name not in self._file_of:
            raise KeyError(f"checkpoint {self.path} has no tensor {name}")
        file = self._file_of[name]
        try:
            with _open(file) as f:
                return f.get_tensor(name)
        except (SafetensorError, TypeError) as e:  # TypeError: a dtype numpy does not know
            raise ValueError(f"{file}: tensor {name} cannot be read ({e})") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._file_of)

    def __len__(self) -> int:
        return len(self._file_of)
