"""Gymnasium adapter for a Unity build driven through ML-Agents (paper 4.1), a drop-in for `sim.IndoorSceneEnv`.

Same observation (32 float32), action ([-1, 1]^3), reward (+1 valid / -1 invalid), `info` ({"valid", "metadata"}
on steps, {"metadata"} on resets), truncation rule (`valid_per_episode` / `max_episode_steps`, counted here) and
`render()` (the camera image, uint8 [H, W, 3]). What the Unity project must implement is docs/unity.md.

Transport: `mlagents_envs.environment.UnityEnvironment` (Python is the gRPC server, Unity the client). Two
changes to its communicator, both for failures: it listens on loopback only (by default) without SO_REUSEPORT,
so a busy port fails at once instead of sharing; and a Unity player that disconnects while Python is busy is
noticed at the next exchange instead of after the whole timeout.
"""

from __future__ import annotations

import glob
import math
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import gymnasium as gym
import numpy as np

try:
    import grpc
    from mlagents_envs import env_utils
    from mlagents_envs.base_env import ActionTuple
    from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
    from mlagents_envs.communicator_objects.unity_to_external_pb2_grpc import (
        add_UnityToExternalProtoServicer_to_server,
    )
    from mlagents_envs.environment import UnityEnvironment
    from mlagents_envs.exception import (
        UnityException,
        UnityTimeOutException,
        UnityWorkerInUseException,
    )
    from mlagents_envs.rpc_communicator import RpcCommunicator, UnityToExternalServicerImplementation
    from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel
except ImportError as e:  # the optional extra
    raise ImportError(
        f"rls3_jax.envs.unity needs the 'unity' extra (mlagents-envs==0.28.0, protobuf==3.20.3): "
        f"pip install 'rls3_jax[unity]' ({e})"
    ) from e

from rls3_jax.envs.metadata_channel import MetadataChannel
from sim import scenes
from sim.env import check_env_arguments
from sim.render import image_shape

BEHAVIOR_NAME = "RLS3"
OBS_SIZE = 32
N_ACTIONS = 3
SPLITS = scenes.SPLITS  # the order is the protocol: rls3_split is an index into it
EDITOR_PORT = UnityEnvironment.DEFAULT_EDITOR_PORT  # 5004: where the editor connects when no build is given
BUILD_PORT = UnityEnvironment.BASE_ENVIRONMENT_PORT  # 5005: passed to a launched build as --mlagents-port

# Environment parameters (EnvironmentParametersChannel, float32 values) sent with every reset.
PARAM_SPLIT = "rls3_split"  # index into SPLITS
PARAM_IMAGE_HEIGHT = "rls3_image_height"
PARAM_IMAGE_WIDTH = "rls3_image_width"
PARAM_SCENE = "rls3_scene"  # slot of the split's scene for this episode, -1: the next one in rotation
PARAM_SEED_SERIAL = "rls3_seed_serial"  # changes exactly when reset() was given a seed
PARAM_SEED_LOW = "rls3_seed_low"  # seed = high * 65536 + low; each half is exact in float32
PARAM_SEED_HIGH = "rls3_seed_high"
MAX_SEED = 2**32 - 1

_DISCONNECTED = 499  # header status the servicer hands Python when the Unity client went away


class UnityEnvError(ConnectionError):
    """Unity could not be started, reached, or kept: the message names the build/port and what to do."""


class _Servicer(UnityToExternalServicerImplementation):
    """ML-Agents' servicer, plus: if the Unity client disconnects while its Exchange waits, tell Python."""

    def Exchange(self, request, context):
        self.child_conn.send(request)
        while not self.child_conn.poll(0.2):
            if not context.is_active():
                return self._gone()
        reply = self.child_conn.recv()
        return reply if context.is_active() else self._gone()

    def _gone(self):
        gone = UnityMessageProto()
        gone.header.status = _DISCONNECTED
        self.child_conn.send(gone)
        return UnityMessageProto()

    Initialize = Exchange


class _Communicator(RpcCommunicator):
    """RpcCommunicator bound to `host` only, without SO_REUSEPORT, with sub-second polling of the deadline and a
    close that returns once the port is free."""

    def __init__(self, worker_id, base_port, timeout_wait, host):
        self._host = host
        super().__init__(worker_id, base_port, timeout_wait)

    def create_server(self):
        self.check_port(self.port)
        try:
            self.server = grpc.server(thread_pool=ThreadPoolExecutor(max_workers=4))
            self.unity_to_external = _Servicer()
            add_UnityToExternalProtoServicer_to_server(self.unity_to_external, self.server)
            if self.server.add_insecure_port(f"{self._host}:{self.port}") == 0:
                raise OSError("bind failed")
            self.server.start()
            self.is_open = True
        except Exception:
            raise UnityWorkerInUseException(self.worker_id) from None

    def poll_for_timeout(self, poll_callback=None) -> None:
        deadline = time.monotonic() + self.timeout_wait
        while (left := deadline - time.monotonic()) > 0:
            if self.unity_to_external.parent_conn.poll(min(0.25, left)):
                return
            if poll_callback:
                poll_callback()
        raise UnityTimeOutException(f"no message from Unity within {self.timeout_wait} s")

    def close(self):
        server = self.server if self.is_open else None
        super().close()
        if server is not None:  # ML-Agents' stop() returns before gRPC closes the listener; a reconnect needs it closed
            server.stop(None).wait(5)


class _UnityEnvironment(UnityEnvironment):
    def __init__(self, *args, listen_host: str, timeout_s: float, **kwargs):
        self._listen_host = listen_host
        self._timeout_s = timeout_s
        super().__init__(*args, **kwargs)

    def _get_communicator(self, worker_id, base_port, timeout_wait):
        return _Communicator(worker_id, base_port, self._timeout_s, self._listen_host)

    def _close(self, timeout=None) -> None:
        if hasattr(self, "_communicator"):  # atexit also calls this for environments whose start failed
            super()._close(timeout)


class _Connection:
    """One ML-Agents connection and its side channels, shared by the adapters on the same build/port: the loop
    opens several environments in turn (fixed sets, pre-training, training) and an editor cannot reconnect."""

    def __init__(self, key):
        self.key = key
        self.env = None
        self.params = EnvironmentParametersChannel()
        self.metadata = MetadataChannel()
        self.seed_serial = 0
        self.behavior: str | None = None
        self.obs_index = self.image_index = -1
        self.owner = None  # the adapter whose episode Unity is playing


_CONNECTIONS: dict[tuple, _Connection] = {}


def close_all() -> None:
    """Close every open Unity connection of this process."""
    for conn in list(_CONNECTIONS.values()):
        env, conn.env = conn.env, None
        if env is not None:
            env._close()
    _CONNECTIONS.clear()


class UnityIndoorSceneEnv(gym.Env):
    """`sim.IndoorSceneEnv`'s interface, backed by a Unity build (`build=`) or a running editor/player (`port=`).

    Connects in the constructor (launching the build if one is given) and raises `UnityEnvError` with a
    one-line message if Unity cannot be started or reached within `timeout_s`; every later exchange is bounded
    by the same timeout. Environments on the same build/port share one connection (see `close()`).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 4}

    def __init__(
        self,
        split: str = "train",
        image_size=224,
        render_mode: str | None = None,
        valid_per_episode: int | None = None,
        max_episode_steps: int | None = None,
        *,
        build: str | None = None,
        port: int | None = None,
        timeout_s: float = 60.0,
        behavior_name: str = BEHAVIOR_NAME,
        no_graphics: bool = False,
        listen_host: str = "localhost",
        additional_args: list[str] | None = None,
        log_folder: str | None = None,
        seed: int = 0,
    ):
        check_env_arguments("UnityIndoorSceneEnv", split, render_mode, valid_per_episode, max_episode_steps)
        if not (timeout_s > 0 and math.isfinite(timeout_s)):
            raise ValueError(
                f"UnityIndoorSceneEnv: timeout_s must be a positive number of seconds, got {timeout_s!r}"
            )
        if port is not None and not 1 <= int(port) <= 65535:
            raise ValueError(f"UnityIndoorSceneEnv: port {port!r} outside 1..65535")
        self.split = split
        self.image_shape = image_shape(image_size)
        self.render_mode = render_mode
        self.valid_per_episode = valid_per_episode
        self.max_episode_steps = max_episode_steps
        self.behavior_name = behavior_name
        self.timeout_s = float(timeout_s)
        self.build = build
        self.port = int(port) if port is not None else (BUILD_PORT if build else EDITOR_PORT)
        self.observation_space = gym.spaces.Box(-1.0, 1.0, shape=(OBS_SIZE,), dtype=np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, shape=(N_ACTIONS,), dtype=np.float32)
        self._where = f"Unity build {build!r} on port {self.port}" if build else f"Unity on port {self.port}"
        self._image: np.ndarray | None = None
        self._warned_resize = False
        self._episode = 0
        self._steps = 0
        self._valid = 0
        self._needs_reset = True
        self._closed = False
        key = (None if build is None else os.path.realpath(_resolve_build(str(build))), self.port)
        conn = _CONNECTIONS.get(key)
        if conn is None or conn.env is None:
            conn = _Connection(key)
            conn.env = self._connect(conn, build, no_graphics, listen_host, additional_args, log_folder, seed)
            _CONNECTIONS[key] = conn
        self._conn = conn

    # ---- connection and failures ----

    def _connect(self, conn, build, no_graphics, listen_host, additional_args, log_folder, seed):
        if build is not None:
            build = _resolve_build(str(build))
        if not 0 <= int(seed) < 2**31:
            raise ValueError(f"UnityIndoorSceneEnv: seed {seed!r} outside 0..2**31-1 (ML-Agents' int32)")
        try:
            return _UnityEnvironment(
                file_name=build,
                base_port=self.port,
                no_graphics=no_graphics,
                timeout_wait=max(1, math.ceil(self.timeout_s)),
                additional_args=list(additional_args or []),
                side_channels=[conn.params, conn.metadata],
                seed=int(seed),
                log_folder=log_folder,
                listen_host=listen_host,
                timeout_s=self.timeout_s,
            )
        except UnityWorkerInUseException:
            raise UnityEnvError(
                f"{self._where}: port {self.port} is in use (another run or program listens there); "
                f"close it or choose another port (--unity-port)"
            ) from None
        except UnityTimeOutException:
            todo = (
                "check that the build starts on this machine (its Player.log) and speaks ML-Agents protocol 1.5.0"
                if build
                else "press Play in the Unity editor (or start the player with --mlagents-port "
                f"{self.port}) before this timeout, or raise --unity-timeout"
            )
            raise UnityEnvError(
                f"{self._where}: no Unity player connected within {self.timeout_s:g} s; {todo}"
            ) from None
        except (UnityException, ValueError, OSError) as e:
            raise UnityEnvError(
                f"{self._where}: could not start the connection ({_one_line(e)}); see docs/unity.md"
            ) from None

    def _fail(self, during: str, e: BaseException):
        self._shutdown(timeout=0)
        if isinstance(e, UnityTimeOutException):
            why = f"no answer within {self.timeout_s:g} s"
        else:
            why = f"Unity went away ({_one_line(e)})"
        raise UnityEnvError(
            f"{self._where} stopped during {during}: {why}; restart Unity and resume the run from its last checkpoint"
        ) from None

    def _contract(self, what: str):
        self._shutdown(timeout=0)
        raise UnityEnvError(f"{self._where} breaks the contract in docs/unity.md: {what}")

    def _shutdown(self, timeout=None):
        """Close the connection (shared by every adapter on the same build/port) and forget it."""
        conn = self._conn
        env, conn.env = conn.env, None
        if _CONNECTIONS.get(conn.key) is conn:
            del _CONNECTIONS[conn.key]
        if env is not None:
            try:
                env._close(timeout)
            except Exception:  # closing a dead connection may fail in many ways; the port is freed regardless
                pass

    def _live_env(self):
        if self._closed or self._conn.env is None:
            raise UnityEnvError(f"{self._where}: the connection is closed; create a new environment")
        return self._conn.env

    # ---- gymnasium API ----

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        env = self._live_env()
        scene = -1
        if options and "scene" in options:
            scene = int(options["scene"])
            if scene < 0:
                raise ValueError(f"UnityIndoorSceneEnv.reset: options['scene']={scene} must be >= 0")
        self._conn.params.set_float_parameter(PARAM_SPLIT, float(SPLITS.index(self.split)))
        self._conn.params.set_float_parameter(PARAM_IMAGE_HEIGHT, float(self.image_shape[0]))
        self._conn.params.set_float_parameter(PARAM_IMAGE_WIDTH, float(self.image_shape[1]))
        self._conn.params.set_float_parameter(PARAM_SCENE, float(scene))
        if seed is not None:
            seed = int(seed)
            if not 0 <= seed <= MAX_SEED:
                raise ValueError(f"UnityIndoorSceneEnv.reset: seed {seed} outside 0..{MAX_SEED}")
            self._conn.seed_serial += 1
            self._conn.params.set_float_parameter(PARAM_SEED_LOW, float(seed & 0xFFFF))
            self._conn.params.set_float_parameter(PARAM_SEED_HIGH, float(seed >> 16))
            self._conn.params.set_float_parameter(PARAM_SEED_SERIAL, float(self._conn.seed_serial))
        self._conn.metadata.take()
        try:
            env.reset()
        except UnityException as e:
            self._fail(f"reset (episode {self._episode + 1})", e)
        if self._conn.behavior is None:
            self._bind_behavior()
        self._episode += 1
        self._steps = 0
        self._valid = 0
        obs, _, _, _ = self._read_agent("reset")
        message = self._one_message("reset")
        self._needs_reset = False
        self._conn.owner = self
        return obs, {"metadata": message["metadata"]}

    def step(self, action):
        if self._needs_reset or self._conn.owner is not self:
            raise RuntimeError(
                "UnityIndoorSceneEnv.step: call reset() first (after each episode end, and after another "
                "environment on the same Unity connection was reset)"
            )
        action = np.asarray(action, dtype=np.float32)
        if action.shape != (N_ACTIONS,):
            raise ValueError(
                f"UnityIndoorSceneEnv.step: action shape {action.shape}, expected ({N_ACTIONS},)"
            )
        if not np.all(np.isfinite(action)):
            raise ValueError(f"UnityIndoorSceneEnv.step: non-finite action {tuple(action.tolist())}")
        env = self._live_env()
        during = f"step {self._steps + 1} of episode {self._episode}"
        try:
            env.set_actions(self._conn.behavior, ActionTuple(continuous=action[None, :]))
            env.step()
        except UnityException as e:
            self._fail(during, e)
        obs, reward, unity_done, interrupted = self._read_agent(during)
        message = self._one_message(during)
        valid = message["valid"]
        if reward != (1.0 if valid else -1.0):
            self._contract(
                f"{during}: reward {reward} but the metadata says valid={valid} (rule: +1 valid, -1 invalid)"
            )
        self._steps += 1
        self._valid += int(valid)
        info = {"valid": True, "metadata": message["metadata"]} if valid else {"valid": False}
        truncated = (self.valid_per_episode is not None and self._valid >= self.valid_per_episode) or (
            self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        )
        terminated = False
        if unity_done:  # Unity ended the episode itself (not required by the contract; reported, not hidden)
            info["unity_episode_end"] = True
            terminated, truncated = (False, True) if interrupted else (True, truncated)
        self._needs_reset = terminated or truncated
        return obs, reward, terminated, truncated, info

    def render(self):
        """The camera image of the current state, uint8 [H, W, 3]."""
        if self._image is None:
            raise RuntimeError("UnityIndoorSceneEnv.render: call reset() first")
        return self._image.copy()

    def close(self):
        """Release this environment. The connection stays open for the next environment on the same build/port
        (a Unity editor cannot reconnect by itself); it closes with `close_connection()` or at exit."""
        self._closed = True

    def close_connection(self):
        """Close the connection to Unity now (a launched build exits; an editor leaves Play mode's training)."""
        self._closed = True
        if self._conn.env is not None:
            self._shutdown()

    # ---- reading Unity's answer ----

    def _bind_behavior(self):
        env = self._conn.env
        names = [n for n in env.behavior_specs if n.split("?")[0] == self.behavior_name]
        if len(names) != 1:
            self._contract(
                f"expected one behaviour named {self.behavior_name!r}, Unity has {sorted(env.behavior_specs)}"
            )
        spec = env.behavior_specs[names[0]]
        a = spec.action_spec
        if a.continuous_size != N_ACTIONS or a.discrete_size != 0:
            self._contract(
                f"behaviour {names[0]!r} must have {N_ACTIONS} continuous actions and no discrete ones, "
                f"has {a.continuous_size} continuous and branches {a.discrete_branches}"
            )
        shapes = [tuple(o.shape) for o in spec.observation_specs]
        vec = [i for i, s in enumerate(shapes) if s == (OBS_SIZE,)]
        img = [i for i, s in enumerate(shapes) if len(s) == 3 and 3 in (s[0], s[-1])]
        if len(vec) != 1 or len(img) != 1 or len(shapes) != 2:
            self._contract(
                f"behaviour {names[0]!r} must observe one vector of {OBS_SIZE} floats and one RGB camera, "
                f"has observation shapes {shapes}"
            )
        self._conn.behavior, self._conn.obs_index, self._conn.image_index = names[0], vec[0], img[0]

    def _read_agent(self, during: str):
        decision, terminal = self._conn.env.get_steps(self._conn.behavior)
        if len(terminal) > 0:
            steps, done, interrupted = terminal, True, bool(terminal.interrupted[0])
        elif len(decision) == 1:
            steps, done, interrupted = decision, False, False
        else:
            self._contract(
                f"{during}: expected one agent requesting a decision, got {len(decision)} (the agent must call "
                f"RequestDecision() after every action and after OnEpisodeBegin)"
            )
        obs = np.asarray(steps.obs[self._conn.obs_index][0], dtype=np.float32)
        if not np.all(np.isfinite(obs)):
            self._contract(f"{during}: non-finite observation")
        self._image = self._to_uint8_image(steps.obs[self._conn.image_index][0])
        return obs, float(steps.reward[0]), done, interrupted

    def _to_uint8_image(self, image: np.ndarray) -> np.ndarray:
        if image.shape[-1] != 3:  # CHW (mlagents-envs >= 1.0) -> HWC
            image = np.moveaxis(image, 0, -1)
        image = np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
        if image.shape[:2] != self.image_shape:
            from PIL import Image

            if not self._warned_resize:
                warnings.warn(
                    f"{self._where}: camera images are {image.shape[:2]}, resizing to {self.image_shape}; set the "
                    f"camera sensor to {PARAM_IMAGE_HEIGHT} x {PARAM_IMAGE_WIDTH} (docs/unity.md)",
                    stacklevel=3,
                )
                self._warned_resize = True
            h, w = self.image_shape
            image = np.asarray(Image.fromarray(image).resize((w, h), Image.BILINEAR))
        return image

    def _one_message(self, during: str) -> dict:
        try:
            messages = self._conn.metadata.take()
        except ValueError as e:
            self._contract(f"{during}: {e}")
        if len(messages) != 1:
            self._contract(f"{during}: expected one metadata message, got {len(messages)}")
        message = messages[0]
        expected_event = "reset" if during == "reset" else "step"
        if message["event"] != expected_event:
            self._contract(f"{during}: metadata event {message['event']!r}, expected {expected_event!r}")
        expected_step = 0 if during == "reset" else self._steps + 1
        if message["step"] != expected_step:
            self._contract(f"{during}: metadata is for step {message['step']}, expected {expected_step}")
        return message


def UnityEnv(
    build_path: str | None = None,
    port: int | None = None,
    split: str = "train",
    image_size=224,
    timeout_s: float = 60.0,
    seed: int = 0,
    **options,
) -> UnityIndoorSceneEnv:
    """The loop's constructor: a build to launch (`--unity-build`) or a port to attach to (`--unity-port`)."""
    options.setdefault("render_mode", "rgb_array")
    return UnityIndoorSceneEnv(
        split=split,
        image_size=image_size,
        build=build_path,
        port=port,
        timeout_s=timeout_s,
        seed=seed,
        **options,
    )


def _resolve_build(build: str) -> str:
    """The player executable for a build path: the file itself, or the one *.x86_64 inside a build folder."""
    path = os.path.expanduser(build)
    if os.path.isdir(path):
        players = sorted(glob.glob(os.path.join(path, "*.x86_64")))
        if len(players) == 1:
            path = players[0]
    if env_utils.validate_environment_path(path) is None:
        raise UnityEnvError(
            f"Unity build {build!r} not found: pass --unity-build the Linux player (the .x86_64 file, or a folder "
            f"holding exactly one), or --unity-port to attach to a running editor"
        )
    if not os.access(env_utils.validate_environment_path(path), os.X_OK):
        raise UnityEnvError(
            f"Unity build {build!r} is not executable: chmod +x it (and its folder's player files)"
        )
    return path


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__
