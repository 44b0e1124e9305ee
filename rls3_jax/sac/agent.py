"""Functional soft actor-critic (Haarnoja et al. 2018) with Stable-Baselines3's defaults.

The whole agent is one pytree, `SACState` (parameters, target parameters, optimiser states, log entropy
coefficient, RNG key, step counters); every function takes it and returns a new one, nothing holds hidden
state. Every function that runs per step is defined once and jitted there (shapes are fixed; counters are
device arrays); one calling another inside a trace (`step`, a `lax.scan`) is compiled into the caller.
`SAC` bundles them as an `rls3_jax.sac.bundle.Agent` (`RANDOM` in `rls3_jax.sac.random_agent` is the random
baseline with the same signatures; `rls3_jax.sac.agents.get(name)` picks one):

    agent  = agents.get("sac")                                         # == SAC
    state  = agent.init(config, obs_dim, act_dim, seed)               # SACState
    buffer = replay.init(config.buffer_size, obs_dim, act_dim)        # ReplayBuffer (rls3_jax.sac.buffer)
    action, state = agent.act(state, obs)                              # uniform random before learning_starts
    buffer, index = replay.add(buffer, replay.make_transition(obs, action, reward, next_obs, terminated))
    state, metrics = agent.train_step(state, buffer)                   # counts the env step; updates once started
    # or all three fused into one dispatch per environment step (state and buffer are donated):
    action, state, buffer, index, metrics = agent.step(state, buffer, transition, obs_to_act_on)
    buffer = replay.add_to_last_reward(buffer, index, beta * j2)       # the delayed VLM reward of the episode
    state, metrics = agent.update(state, batch)                        # one gradient step on a given batch

Actions lie in [-1, 1]^act_dim (tanh squashed); environments with other bounds rescale them.
The order inside one update follows SB3: the entropy coefficient used in the losses is the one before this
update; the actor loss uses the critics just updated; targets follow by Polyak averaging with tau.
"""

from __future__ import annotations

import functools
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from rls3_jax.sac import buffer as replay
from rls3_jax.sac.bundle import Agent
from rls3_jax.sac.config import SACConfig
from rls3_jax.sac.networks import Actor, DoubleCritic, sample_squashed


@struct.dataclass
class SACState:
    actor_params: Any
    critic_params: Any
    target_critic_params: Any
    log_alpha: jax.Array  # log of the entropy coefficient, ()
    actor_opt_state: Any
    critic_opt_state: Any
    alpha_opt_state: Any
    rng: jax.Array
    env_steps: jax.Array  # int32 (): environment steps counted by train_step/step
    updates: jax.Array  # int32 (): gradient steps taken
    config: SACConfig = struct.field(pytree_node=False)
    obs_dim: int = struct.field(pytree_node=False)
    act_dim: int = struct.field(pytree_node=False)


def _actor(config: SACConfig, act_dim: int) -> Actor:
    return Actor(act_dim, config.hidden_sizes, config.log_std_min, config.log_std_max)


def _critic(config: SACConfig) -> DoubleCritic:
    return DoubleCritic(config.hidden_sizes)


def _adam(config: SACConfig) -> optax.GradientTransformation:
    return optax.adam(config.learning_rate)


def _key(seed) -> jax.Array:
    if isinstance(seed, (int, np.integer)):
        return jax.random.PRNGKey(int(seed))
    return jnp.asarray(seed)


def init(config: SACConfig, obs_dim: int, act_dim: int, seed: int | jax.Array = 0) -> SACState:
    """A fresh agent: parameters from `seed` (an int or a PRNG key), entropy coefficient initial_entropy_coef."""
    if obs_dim <= 0 or act_dim <= 0:
        raise ValueError(f"SAC needs positive obs_dim and act_dim, got {obs_dim} and {act_dim}")
    return _init(config, int(obs_dim), int(act_dim), _key(seed))


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _init(config: SACConfig, obs_dim: int, act_dim: int, key: jax.Array) -> SACState:
    k_actor, k_critic, k_state = jax.random.split(key, 3)
    obs = jnp.zeros((1, obs_dim), jnp.float32)
    action = jnp.zeros((1, act_dim), jnp.float32)
    actor_params = _actor(config, act_dim).init(k_actor, obs)
    critic_params = _critic(config).init(k_critic, obs, action)
    log_alpha = jnp.log(jnp.asarray(config.initial_entropy_coef, jnp.float32))
    tx = _adam(config)
    return SACState(
        actor_params=actor_params,
        critic_params=critic_params,
        target_critic_params=jax.tree_util.tree_map(jnp.copy, critic_params),
        log_alpha=log_alpha,
        actor_opt_state=tx.init(actor_params),
        critic_opt_state=tx.init(critic_params),
        alpha_opt_state=tx.init(log_alpha),
        rng=k_state,
        env_steps=jnp.zeros((), jnp.int32),
        updates=jnp.zeros((), jnp.int32),
        config=config,
        obs_dim=obs_dim,
        act_dim=act_dim,
    )


@functools.partial(jax.jit, static_argnames="deterministic")
def act(state: SACState, obs: jax.Array, deterministic: bool = False) -> tuple[jax.Array, SACState]:
    """Action for `obs` (shape (obs_dim,) or (n, obs_dim)) and the state with its RNG advanced.

    Stochastic actions are uniform in [-1, 1] while fewer than learning_starts env steps were counted
    (as SB3 does); deterministic ones are tanh(mean).
    """
    chex.assert_axis_dimension(obs, -1, state.obs_dim)
    rng, k_policy, k_uniform = jax.random.split(state.rng, 3)
    mean, log_std = _actor(state.config, state.act_dim).apply(state.actor_params, obs)
    if deterministic:
        action = jnp.tanh(mean)
    else:
        policy_action, _ = sample_squashed(mean, log_std, k_policy)
        uniform_action = jax.random.uniform(k_uniform, policy_action.shape, minval=-1.0, maxval=1.0)
        action = jnp.where(state.env_steps < state.config.learning_starts, uniform_action, policy_action)
    return action, state.replace(rng=rng)



@jax.jit
def update(state: SACState, batch: replay.Transition) -> tuple[SACState, dict[str, jax.Array]]:
    """One SAC gradient step on `batch` (a Transition with a leading batch axis)."""
    cfg = state.config
    batch_size = batch.reward.shape[0]
    # A reward of shape (B, 1) would silently broadcast the TD target to (B, B): check every shape.
    chex.assert_shape(batch.obs, (batch_size, state.obs_dim))
    chex.assert_shape(batch.next_obs, (batch_size, state.obs_dim))
    chex.assert_shape(batch.action, (batch_size, state.act_dim))
    chex.assert_shape([batch.reward, batch.done], (batch_size,))

    actor, critic, tx = _actor(cfg, state.act_dim), _critic(cfg), _adam(cfg)
    rng, k_next, k_pi = jax.random.split(state.rng, 3)
    alpha = jnp.exp(state.log_alpha)

    next_mean, next_log_std = actor.apply(state.actor_params, batch.next_obs)
    next_action, next_logp = sample_squashed(next_mean, next_log_std, k_next)
    next_q = jnp.min(critic.apply(state.target_critic_params, batch.next_obs, next_action), axis=0)
    td_target = batch.reward + (1.0 - batch.done) * cfg.gamma * (next_q - alpha * next_logp)
    td_target = jax.lax.stop_gradient(td_target)

    def critic_loss_fn(params):
        q = critic.apply(params, batch.obs, batch.action)  # (2, B)
        return 0.5 * jnp.sum(jnp.mean((q - td_target[None]) ** 2, axis=1)), q

    (critic_loss, q), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(state.critic_params)
    critic_step, critic_opt_state = tx.update(critic_grads, state.critic_opt_state, state.critic_params)
    critic_params = optax.apply_updates(state.critic_params, critic_step)

    def actor_loss_fn(params):
        mean, log_std = actor.apply(params, batch.obs)
        action, logp = sample_squashed(mean, log_std, k_pi)
        q_pi = jnp.min(critic.apply(critic_params, batch.obs, action), axis=0)
        return jnp.mean(alpha * logp - q_pi), logp

    (actor_loss, logp), actor_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(state.actor_params)
    actor_step, actor_opt_state = tx.update(actor_grads, state.actor_opt_state, state.actor_params)
    actor_params = optax.apply_updates(state.actor_params, actor_step)

    entropy_error = jax.lax.stop_gradient(logp + cfg.entropy_target(state.act_dim))
    alpha_loss_fn = lambda log_alpha: -jnp.mean(log_alpha * entropy_error)
    alpha_loss, alpha_grad = jax.value_and_grad(alpha_loss_fn)(state.log_alpha)
    alpha_step, alpha_opt_state = tx.update(alpha_grad, state.alpha_opt_state, state.log_alpha)
    log_alpha = optax.apply_updates(state.log_alpha, alpha_step)

    updates = state.updates + 1
    tau = jnp.where(updates % cfg.target_update_interval == 0, cfg.tau, 0.0)
    target_critic_params = optax.incremental_update(critic_params, state.target_critic_params, tau)

    new_state = state.replace(
        actor_params=actor_params,
        critic_params=critic_params,
        target_critic_params=target_critic_params,
        log_alpha=log_alpha,
        actor_opt_state=actor_opt_state,
        critic_opt_state=critic_opt_state,
        alpha_opt_state=alpha_opt_state,
        rng=rng,
        updates=updates,
    )
    metrics = {
        "critic_loss": critic_loss,
        "actor_loss": actor_loss,
        "alpha_loss": alpha_loss,
        "alpha": alpha,
        "q_mean": jnp.mean(q),
        "entropy": -jnp.mean(logp),
    }
    return new_state, metrics



@jax.jit
def train_step(state: SACState, buffer: replay.ReplayBuffer) -> tuple[SACState, dict[str, jax.Array]]:
    """Count one environment step; once more than learning_starts were counted, take gradient_steps updates
    on batches sampled from `buffer` (sampling and updating fused in one dispatch)."""
    cfg = state.config
    state = state.replace(env_steps=state.env_steps + 1)

    def one_update(state, _):
        rng, key = jax.random.split(state.rng)
        batch = replay.sample(buffer, key, cfg.batch_size)
        return update(state.replace(rng=rng), batch)

    def train(state):
        state, metrics = jax.lax.scan(one_update, state, None, length=cfg.gradient_steps)
        return state, jax.tree_util.tree_map(lambda m: m[-1], metrics)

    def skip(state):
        shapes = jax.eval_shape(train, state)[1]
        return state, jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

    state, metrics = jax.lax.cond(state.env_steps > cfg.learning_starts, train, skip, state)
    return state, {**metrics, "trained": state.env_steps > cfg.learning_starts}



@functools.partial(jax.jit, donate_argnums=(0, 1))
def step(state, buffer, transition, obs_to_act_on):
    """Store `transition`, train (train_step), and choose the next action for `obs_to_act_on`.

    Returns (action, state, buffer, index, metrics); `index` is the buffer slot holding `transition`, to be
    kept for the delayed reward of the episode's last transition.
    """
    buffer, index = replay.add(buffer, transition)
    state, metrics = train_step(state, buffer)
    action, state = act(state, obs_to_act_on)
    return action, state, buffer, index, metrics


SAC = Agent(name="sac", init=init, act=act, update=update, train_step=train_step, step=step)
