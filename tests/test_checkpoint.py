import jax.numpy as jnp
import numpy as np
import optax
import pytest

from rls3_jax import checkpoint


def test_roundtrip_keeps_structure_dtypes_and_metadata(tmp_path):
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.zeros(3, jnp.bfloat16), "n": 7, "name": "x"}
    opt = optax.adam(1e-3).init(params["w"])
    checkpoint.save(tmp_path / "ck", {"params": params, "opt": opt, "steps": [1, 2]}, {"iteration": 4})
    tree, meta = checkpoint.load(tmp_path / "ck")
    assert meta == {"iteration": 4}
    np.testing.assert_array_equal(tree["params"]["w"], params["w"])
    assert tree["params"]["b"].dtype == jnp.bfloat16
    assert tree["params"]["n"] == 7 and tree["params"]["name"] == "x" and tree["steps"] == [1, 2]
    restored = checkpoint.restore_like(opt, tree["opt"])
    assert restored[0].count.shape == () and restored[0].mu.shape == (2, 3)


def test_overwrite_is_atomic_and_leaves_no_temporaries(tmp_path):
    checkpoint.save(tmp_path / "ck", {"a": jnp.ones(2)}, {"i": 1})
    checkpoint.save(tmp_path / "ck", {"a": jnp.zeros(2)}, {"i": 2})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert checkpoint.load(tmp_path / "ck")[1] == {"i": 2}


def test_failed_write_keeps_previous_checkpoint(tmp_path):
    checkpoint.save(tmp_path / "ck", {"a": jnp.ones(2)}, {"i": 1})
    with pytest.raises(TypeError, match="object"):
        checkpoint.save(tmp_path / "ck", {"a": object()}, {"i": 2})
    assert checkpoint.load(tmp_path / "ck")[1] == {"i": 1}


def test_missing_and_mismatched(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        checkpoint.load(tmp_path / "nothing")
    checkpoint.save(tmp_path / "ck", {"a": jnp.ones(2)})
    tree, _ = checkpoint.load(tmp_path / "ck")
    with pytest.raises(ValueError, match="shape"):
        checkpoint.restore_like({"a": jnp.ones(3)}, tree)
