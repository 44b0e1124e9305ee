"""Checkpoints: a pytree of arrays with JSON metadata as one orbax checkpoint directory, replaced atomically.

The one format for the loop's state (one process or many: every process writes the shards its devices own)
and for pretrained agents. A save goes to a sibling staging directory that is renamed into place, so a crash
mid-write leaves the previous checkpoint as it was; files are group-readable (shared file systems).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from rls3_jax import distributed

FORMAT = 2  # 1: safetensors + tree.json (rls3_jax before orbax), refused with a one-line error
_LEAVES = (jax.Array, np.ndarray, np.generic, bool, int, float, str)


class OldCheckpointError(ValueError):
    """A checkpoint written by an older rls3_jax, in a format this one does not read."""


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.Checkpointer(ocp.CompositeCheckpointHandler())


def _check_leaves(tree: Any) -> None:
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if not isinstance(leaf, _LEAVES):
            raise TypeError(f"cannot checkpoint a leaf of type {type(leaf).__name__} at "
                            f"{jax.tree_util.keystr(path) or '/'}")


def save(path: str | os.PathLike, tree: Any, metadata: dict | None = None) -> Path:
    """Write `tree` (arrays, sharded or not, and plain values) and `metadata` (JSON) to the directory `path`.
    Every process calls it in a multi-process run."""
    import orbax.checkpoint as ocp

    _check_leaves(tree)
    path = Path(path).absolute()
    staging, old = path.with_name(f".{path.name}.new"), path.with_name(f".{path.name}.old")
    if distributed.is_main():
        path.parent.mkdir(parents=True, exist_ok=True)
    distributed.barrier(f"checkpoint {path} staging")
    with _checkpointer() as checkpointer:
        checkpointer.save(staging, args=ocp.args.Composite(
            state=ocp.args.PyTreeSave(tree), meta=ocp.args.JsonSave({"format": FORMAT, "metadata": metadata or {}})),
            force=True)
    if distributed.is_main():
        if path.exists():
            shutil.rmtree(old, ignore_errors=True)
            path.rename(old)
        staging.rename(path)
        shutil.rmtree(old, ignore_errors=True)
    distributed.barrier(f"checkpoint {path} saved")
    return path


def _existing(path: Path) -> Path:
    if path.is_dir():
        return path
    old = path.with_name(f".{path.name}.old")
    if old.is_dir():  # a crash between the two renames of `save`
        return old
    raise FileNotFoundError(f"no checkpoint at {path}")


def metadata_file(path: str | os.PathLike) -> Path:
    """The JSON file holding a checkpoint's metadata (under "metadata")."""
    return _existing(Path(path).absolute()) / "meta" / "metadata"


def load(path: str | os.PathLike, like: Any = None) -> tuple[Any, dict]:
    """Read a checkpoint written by `save`: (tree, metadata). With `like` (a tree of arrays of the saved
    structure) the arrays come back with its dtypes and shardings; without, as numpy arrays."""
    import orbax.checkpoint as ocp

    path = _existing(Path(path).absolute())
    if (path / "tree.json").is_file():
        raise OldCheckpointError(f"{path} was written by an older rls3_jax (safetensors format), which this "
                                 "version does not read; start a new run")
    if not (path / "meta" / "metadata").is_file() or not (path / "state").is_dir():
        raise FileNotFoundError(f"checkpoint {path} is incomplete")
    with _checkpointer() as checkpointer:
        if like is None:
            from etils import epath

            saved = ocp.PyTreeCheckpointHandler().metadata(epath.Path(path) / "state").tree
            restore_args = jax.tree_util.tree_map(  # arrays as numpy; Python scalars and strings as they were
                lambda m: ocp.RestoreArgs(restore_type=np.ndarray) if type(m).__name__ == "ArrayMetadata"
                else ocp.RestoreArgs(), saved)
            state = ocp.args.PyTreeRestore(restore_args=restore_args)
        else:
            state = ocp.args.PyTreeRestore(item=like, restore_args=ocp.checkpoint_utils.construct_restore_args(like))
        restored = checkpointer.restore(path, args=ocp.args.Composite(state=state, meta=ocp.args.JsonRestore()))
    if restored["meta"].get("format") != FORMAT:
        raise OldCheckpointError(f"{path} holds checkpoint format {restored['meta'].get('format')}, this rls3_jax "
                                 f"reads {FORMAT}")
    return restored["state"], restored["meta"]["metadata"]


def _key(entry) -> str:
    for attribute in ("key", "name", "idx"):
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return str(entry)


def _by_path(tree: Any) -> dict[tuple[str, ...], Any]:
    return {tuple(_key(k) for k in path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def restore_like(template: Any, loaded: Any) -> Any:
    """Put loaded leaves into the structure of `template` (e.g. optax states, flax structs), matched by their
    paths in the tree and checked for shape."""
    paths, treedef = jax.tree_util.tree_flatten_with_path(template)
    values = _by_path(loaded)
    out = []
    for path, t in paths:
        key = tuple(_key(k) for k in path)
        if key not in values:
            raise ValueError(f"checkpoint has no leaf at {'/'.join(key)}")
        v = values[key]
        if hasattr(t, "shape") and np.shape(t) != np.shape(v):
            raise ValueError(f"checkpoint leaf {'/'.join(key)} has shape {np.shape(v)}, expected {np.shape(t)}")
        out.append(jax.numpy.asarray(v, dtype=t.dtype) if hasattr(t, "dtype") else type(t)(v))
    if len(values) != len(paths):
        raise ValueError(f"checkpoint holds {len(values)} leaves, expected {len(paths)}")
    return jax.tree_util.tree_unflatten(treedef, out)
