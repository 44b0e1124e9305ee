"""rls3_jax.vlm.attention.softmax: the attention softmax differentiated in closed form, same values and gradients."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from rls3_jax.vlm import attention


def _plain_softmax(x):  # autodiff goes through exp, sum and the division
    e = jnp.exp(x - jax.lax.stop_gradient(x.max(-1, keepdims=True)))
    return e / e.sum(-1, keepdims=True)


def _logits():
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 3, 5, 7)) * 4
    masked = jax.random.bernoulli(jax.random.PRNGKey(1), 0.3, x.shape).at[0, 0, 0].set(True)  # one row all masked
    return jnp.where(masked, jnp.finfo(jnp.float32).min, x)


def test_values_and_gradients_match_the_plain_softmax():
    x = _logits()
    weights = jax.random.normal(jax.random.PRNGKey(2), x.shape)
    loss = lambda f: lambda x: (jnp.sin(f(x)) * weights).sum()
    np.testing.assert_allclose(attention.softmax(x), _plain_softmax(x), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jax.grad(loss(attention.softmax))(x), jax.grad(loss(_plain_softmax))(x), rtol=1e-5, atol=1e-6)
    assert np.isfinite(np.asarray(jax.grad(loss(attention.softmax))(x))).all()


def test_it_is_differentiated_by_its_custom_jvp_whatever_the_global_setting():
    with jax.softmax_custom_jvp(False):
        ours = str(jax.make_jaxpr(attention.softmax)(_logits()))
        plain = str(jax.make_jaxpr(lambda x: jax.nn.softmax(x, axis=-1))(_logits()))
    assert "custom_jvp_call" in ours
    assert "custom_jvp_call" not in plain  # the default this module overrides
