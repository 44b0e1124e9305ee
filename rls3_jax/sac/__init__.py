"""The data-generating agents: a functional soft actor-critic and the random baseline."""
