"""The device mesh and the sharding rules of the VLM learners (one code path for 1 .. N devices, 1 .. P hosts).

The mesh has two axes: `data` (pure data parallelism: parameters replicated across it) and `fsdp` (fully
sharded data parallelism: every large parameter and its optimiser state is split along it, as in ZeRO-3 /
big_vision's fsdp rule). A batch is split over *both* axes (all devices see different samples; devices along
`fsdp` gather the parameter shards they need), so batch sizes are padded to a multiple of the device count.
On one device every sharding is trivial and the jitted functions are the same programs as without a mesh.

Multi-host: every process holds the same host data (numpy) and builds the global arrays from it with
`put`; outputs that come back to the host are replicated, so every process reads the same values.
"""

from __future__ import annotations

import math
import re

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ("data", "fsdp")
# Arrays with fewer elements are replicated: sharding them saves little memory and costs a collective each.
MIN_SHARD_SIZE = 2**14


def parse_mesh(spec: str | None, device_count: int) -> tuple[int, int]:
    """'data=N,fsdp=M' -> (N, M); one size may be -1 (the rest of the devices); None: all devices on data."""
    if spec is None or not spec.strip():
        return device_count, 1
    sizes = {}
    for part in spec.split(","):
        match = re.fullmatch(r"\s*(\w+)\s*=\s*(-?\d+)\s*", part)
        if not match or match.group(1) not in AXES:
            raise ValueError(f"--mesh {spec!r}: expected 'data=N,fsdp=M' (axes {', '.join(AXES)}), got {part!r}")
        sizes[match.group(1)] = int(match.group(2))
    data, fsdp = sizes.get("data", -1 if "fsdp" in sizes else device_count), sizes.get("fsdp", 1)
    if data == -1 and fsdp == -1:
        raise ValueError(f"--mesh {spec!r}: at most one axis may be -1")
    if data == -1 and fsdp > 0 and device_count % fsdp == 0:
        data = device_count // fsdp
    if fsdp == -1 and data > 0 and device_count % data == 0:
        fsdp = device_count // data
    if data <= 0 or fsdp <= 0 or data * fsdp != device_count:
        raise ValueError(f"--mesh {spec!r}: data x fsdp = {data} x {fsdp} must equal the {device_count} devices")
    return data, fsdp


def make_mesh(spec: str | None = None, devices=None) -> Mesh:
    """A ('data', 'fsdp') mesh over `devices` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    shape = parse_mesh(spec, len(devices))
    try:  # a topology-aware layout on TPU/GPU slices
        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, AXES)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device; other axes whole."""
    return NamedSharding(mesh, P(AXES))


def batch_multiple(mesh: Mesh) -> int:
    """Batch sizes must be multiples of this (the number of batch shards)."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def array_sharding(mesh: Mesh, shape, min_size: int = MIN_SHARD_SIZE) -> NamedSharding:
    """The fsdp rule for one array: split its largest axis divisible by the fsdp size along `fsdp` when it
    has at least `min_size` elements; replicate it otherwise."""
    fsdp = mesh.shape["fsdp"]
    if fsdp == 1 or math.prod(shape) < min_size:
        return replicated(mesh)
    candidates = [i for i in np.argsort(shape)[::-1] if shape[i] % fsdp == 0]
    if not candidates:
        return replicated(mesh)
    spec = [None] * len(shape)
    spec[int(candidates[0])] = "fsdp"
    return NamedSharding(mesh, P(*spec))


def param_sharding(mesh: Mesh, tree, min_size: int = MIN_SHARD_SIZE):
    """A tree of NamedShardings for a tree of arrays (or ShapeDtypeStructs): parameters, optimiser state
    (whose moments have the parameters' shapes, so they shard alike), frozen parameters too."""
    return jax.tree.map(lambda x: array_sharding(mesh, np.shape(x), min_size), tree)


def put(tree, shardings):
    """Place a tree on the mesh. numpy leaves must hold the same values on every process (each process
    copies only the slices its devices own); jax.Array leaves are resharded."""

    def one(x, sharding):
        if isinstance(x, jax.Array):
            return x if x.sharding == sharding else jax.device_put(x, sharding)
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    if isinstance(shardings, jax.sharding.Sharding):
        return jax.tree.map(lambda x: one(x, shardings), tree)
    return jax.tree.map(one, tree, shardings)


def shard_state(mesh: Mesh, state, min_size: int = MIN_SHARD_SIZE):
    """A learner state (params, optimiser state, step) placed by the fsdp rule."""
    return put(state, param_sharding(mesh, state, min_size))


def fetch(tree):
    """Host numpy copies of (replicated or process-spanning) arrays, identical on every process."""
    from jax.experimental import multihost_utils

    def one(x):
        if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
            return np.asarray(x)
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(one, tree)


def per_device_bytes(tree) -> int:
    """Bytes of `tree` held by the most loaded local device."""
    totals: dict = {}
    for leaf in jax.tree.leaves(tree):
        if isinstance(leaf, jax.Array):
            for shard in leaf.addressable_shards:
                totals[shard.device] = totals.get(shard.device, 0) + shard.data.nbytes
    return max(totals.values(), default=0)
