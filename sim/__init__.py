"""Stand-in indoor-scene simulator for RLS3: scenes, objects, feasibility geometry, renderer, Gymnasium env."""

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
]
