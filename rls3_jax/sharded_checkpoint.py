"""Checkpoints of sharded state with orbax: every process writes the shards its devices own, and a restore
reads each device's slices straight into the target shardings (no whole model gathered onto one host).

Every process must call `save` and `restore` (they are collective); the directory must be visible to all
processes (a shared file system or a bucket path on multi-host slices).
"""

from __future__ import annotations

from pathlib import Path

import jax


def _checkpointer():
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer()


def save(path: str | Path, tree) -> None:
    """Write `tree` (jax.Arrays, sharded or not) to `path`, replacing what is there; returns when done."""
    checkpointer = _checkpointer()
    checkpointer.save(Path(path).absolute(), tree, force=True)
    checkpointer.wait_until_finished()
    checkpointer.close()


def restore(path: str | Path, template, shardings=None):
    """The tree at `path` laid out like `template` (arrays or ShapeDtypeStructs); `shardings` (a tree of
    Shardings, default: the template's own) says where each array goes."""
    path = Path(path).absolute()
    if not path.is_dir():
        raise FileNotFoundError(f"no sharded checkpoint at {path}")
    if shardings is None:
        shardings = jax.tree.map(lambda x: x.sharding, template)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), template, shardings)
    checkpointer = _checkpointer()
    try:
        return checkpointer.restore(path, abstract)
    finally:
        checkpointer.close()
