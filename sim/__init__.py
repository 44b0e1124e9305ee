"""Stand-in indoor-scene simulator for RLS3: scenes, objects, feasibility geometry, renderer, Gymnasium env."""

import gymnasium

from sim.env import IndoorSceneEnv
from sim.objects import OBJECT_NAMES, OBJECTS
from sim.samples import generate_metadata, generate_samples
from sim.scenes import SCENES, TEST_SCENES, TRAIN_SCENES, scenes_for_split

__all__ = [
    "IndoorSceneEnv",
    "generate_samples",
    "generate_metadata",
    "SCENES",
    "TRAIN_SCENES",
    "TEST_SCENES",
    "OBJECTS",
    "OBJECT_NAMES",
    "scenes_for_split",
    "ENV_ID",
]

# `gymnasium.make(ENV_ID, split=..., image_size=..., render_mode="rgb_array")` builds an IndoorSceneEnv; the
# check keeps a reload of this module from registering it twice (which gymnasium warns about).
ENV_ID = "RLS3/IndoorScene-v0"
if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point="sim.env:IndoorSceneEnv")
