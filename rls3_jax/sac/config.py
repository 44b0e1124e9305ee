"""Every hyperparameter of the soft actor-critic agent, with Stable-Baselines3's SAC defaults."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """SAC hyperparameters (Haarnoja et al. 2018; defaults as in SB3's `SAC`).

    Frozen and hashable so that it can be a static argument of jitted functions.
    """

    hidden_sizes: tuple[int, ...] = (256, 256)  # both the actor and each critic
    learning_rate: float = 3e-4  # Adam, for actor, critics and entropy coefficient
    gamma: float = 0.99
    tau: float = 0.005  # Polyak averaging of the target critics
    batch_size: int = 256
    buffer_size: int = 1_000_000
    learning_starts: int = 100  # uniform random actions and no updates before this many env steps
    gradient_steps: int = 1  # updates per env step once learning has started
    target_update_interval: int = 1  # in updates
    initial_entropy_coef: float = 1.0  # SB3's ent_coef="auto" starts at 1.0
    target_entropy: float | None = None  # None: -|A|
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    def __post_init__(self):
        if not self.hidden_sizes or any(int(h) <= 0 for h in self.hidden_sizes):
            raise ValueError(f"SACConfig.hidden_sizes must be positive layer widths, got {self.hidden_sizes}")
        object.__setattr__(self, "hidden_sizes", tuple(int(h) for h in self.hidden_sizes))
        for name in ("learning_rate", "batch_size", "buffer_size", "gradient_steps", "target_update_interval",
                     "initial_entropy_coef"):
            if getattr(self, name) <= 0:
                raise ValueError(f"SACConfig.{name} must be positive, got {getattr(self, name)}")
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"SACConfig.gamma must lie in [0, 1], got {self.gamma}")
        if not 0.0 < self.tau <= 1.0:
            raise ValueError(f"SACConfig.tau must lie in (0, 1], got {self.tau}")
        if self.learning_starts < 0:
            raise ValueError(f"SACConfig.learning_starts must be >= 0, got {self.learning_starts}")
        if self.batch_size > self.buffer_size:
            raise ValueError(f"SACConfig.batch_size {self.batch_size} exceeds buffer_size {self.buffer_size}")

    def entropy_target(self, act_dim: int) -> float:
        return float(-act_dim) if self.target_entropy is None else float(self.target_entropy)
