"""Pytree checkpoints as safetensors + JSON, written atomically.

A checkpoint is a directory holding `arrays.safetensors` (every array leaf, keyed by its tree path) and
`tree.json` (the tree's structure with non-array leaves inline, plus free-form metadata). It is written
into a sibling temporary directory and renamed into place, so a crash mid-write leaves the previous
checkpoint as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np
from safetensors.numpy import load_file, save_file

_ARRAY = "__array__"


def _encode(tree: Any, prefix: str, arrays: dict[str, np.ndarray]) -> Any:
    """Replace array leaves by references into `arrays`; keep plain Python leaves as JSON."""
    if isinstance(tree, dict):
        return {"__dict__": {str(k): _encode(v, f"{prefix}/{k}", arrays) for k, v in tree.items()}}
    if isinstance(tree, (list, tuple)):
        kind = "__list__" if isinstance(tree, list) else "__tuple__"
        return {kind: [_encode(v, f"{prefix}/{i}", arrays) for i, v in enumerate(tree)]}
    if isinstance(tree, (jax.Array, np.ndarray, np.generic)):
        array = np.asarray(jax.device_get(tree))
        key = prefix or "/"
        if array.dtype == jax.numpy.bfloat16:
            # safetensors.numpy cannot hold bfloat16: store the bit pattern and remember the type.
            arrays[key] = array.view(np.uint16)
            return {_ARRAY: key, "dtype": "bfloat16"}
        arrays[key] = np.array(array, order="C")  # ascontiguousarray would turn scalars 1-d
        return {_ARRAY: key}
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    raise TypeError(f"cannot checkpoint a leaf of type {type(tree).__name__} at {prefix or '/'}")


def _decode(node: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(node, dict):
        if _ARRAY in node:
            array = arrays[node[_ARRAY]]
            if node.get("dtype") == "bfloat16":
                array = array.view(jax.numpy.bfloat16)
            return array
        if "__dict__" in node:
            return {k: _decode(v, arrays) for k, v in node["__dict__"].items()}
        if "__list__" in node:
            return [_decode(v, arrays) for v in node["__list__"]]
        if "__tuple__" in node:
            return tuple(_decode(v, arrays) for v in node["__tuple__"])
    return node


def save(path: str | os.PathLike, tree: Any, metadata: dict | None = None) -> Path:
    """Write `tree` (nested dicts/lists/tuples of arrays and plain values) to the directory `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {}
    structure = _encode(tree, "", arrays)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        save_file(arrays, str(tmp / "arrays.safetensors"))
        with open(tmp / "tree.json", "w") as f:
            json.dump({"tree": structure, "metadata": metadata or {}}, f)
            f.flush()
            os.fsync(f.fileno())
        old = path.with_name(f".{path.name}.old")
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            path.rename(old)
        tmp.rename(path)
        if old.exists():
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load(path: str | os.PathLike) -> tuple[Any, dict]:
    """Read a checkpoint written by `save`: (tree of numpy arrays, metadata)."""
    path = Path(path)
    if not path.is_dir():
        old = path.with_name(f".{path.name}.old")
        if old.is_dir():  # a crash between the two renames of `save`
            path = old
        else:
            raise FileNotFoundError(f"no checkpoint at {path}")
    for name in ("arrays.safetensors", "tree.json"):
        if not (path / name).is_file():
            raise FileNotFoundError(f"checkpoint {path} is incomplete: {name} is missing")
    arrays = load_file(str(path / "arrays.safetensors"))
    with open(path / "tree.json") as f:
        payload = json.load(f)
    return _decode(payload["tree"], arrays), payload["metadata"]


def restore_like(template: Any, loaded: Any) -> Any:
    """Put loaded leaves into the structure of `template` (e.g. optax states, flax structs), checking shapes."""
    template_leaves, treedef = jax.tree_util.tree_flatten(template)
    loaded_leaves = jax.tree_util.tree_leaves(loaded)
    if len(template_leaves) != len(loaded_leaves):
        raise ValueError(f"checkpoint holds {len(loaded_leaves)} leaves, expected {len(template_leaves)}")
    out = []
    for i, (t, v) in enumerate(zip(template_leaves, loaded_leaves)):
        if hasattr(t, "shape") and np.shape(t) != np.shape(v):
            raise ValueError(f"checkpoint leaf {i} has shape {np.shape(v)}, expected {np.shape(t)}")
        out.append(jax.numpy.asarray(v, dtype=t.dtype) if hasattr(t, "dtype") else type(t)(v))
    return jax.tree_util.tree_unflatten(treedef, out)
