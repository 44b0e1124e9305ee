"""Flax modules of the soft actor-critic: a tanh-squashed Gaussian actor and twin Q critics."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp


class MLP(nn.Module):
    """ReLU hidden layers, no activation after the last hidden layer's output head (added by callers)."""

    hidden_sizes: Sequence[int]

    @nn.compact
    def __call__(self, x):
        for width in self.hidden_sizes:
            x = nn.relu(nn.Dense(width)(x))
        return x


class Actor(nn.Module):
    """Gaussian policy before the tanh squash: returns (mean, log_std), log_std clipped as in SB3."""

    act_dim: int
    hidden_sizes: Sequence[int]
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, obs):
        h = MLP(self.hidden_sizes)(obs)
        mean = nn.Dense(self.act_dim)(h)
        log_std = jnp.clip(nn.Dense(self.act_dim)(h), self.log_std_min, self.log_std_max)
        return mean, log_std


class QNetwork(nn.Module):
    hidden_sizes: Sequence[int]

    @nn.compact
    def __call__(self, obs, action):
        x = jnp.concatenate([obs, action], axis=-1)
        return nn.Dense(1)(MLP(self.hidden_sizes)(x))[..., 0]


class DoubleCritic(nn.Module):
    """Two independent Q networks whose parameters are stacked on a leading axis of size 2.

    nn.vmap turns the two networks into batched matmuls (one dispatch for both) and returns Q of shape
    (2, *batch).
    """

    hidden_sizes: Sequence[int]
    num_critics: int = 2

    @nn.compact
    def __call__(self, obs, action):
        ensemble = nn.vmap(
            QNetwork,
            variable_axes={"params": 0},
            split_rngs={"params": True},
            in_axes=None,
            out_axes=0,
            axis_size=self.num_critics,
        )
        return ensemble(self.hidden_sizes)(obs, action)


def sample_squashed(mean, log_std, key):
    """Reparameterised tanh-Gaussian sample and its log-probability (sum over action dimensions).

    The tanh correction uses the numerically stable identity log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)).
    """
    std = jnp.exp(log_std)
    noise = jax.random.normal(key, mean.shape, mean.dtype)
    pre_tanh = mean + std * noise
    gaussian_logp = -0.5 * noise**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    correction = 2.0 * (jnp.log(2.0) - pre_tanh - jax.nn.softplus(-2.0 * pre_tanh))
    return jnp.tanh(pre_tanh), jnp.sum(gaussian_logp - correction, axis=-1)
