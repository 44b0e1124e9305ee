"""A stand-in Unity player backed by `sim.IndoorSceneEnv`: it speaks ML-Agents' protocol the way a Unity build
implementing docs/unity.md does, so the Unity adapter (and a whole run with `--env unity`) can be checked without
Unity. Use it to test a set-up, then replace it with the real build:

    python -m rls3_jax.envs.fake_unity_player --port 5004 --split train &
    python -m rls3_jax.main --env unity --unity-port 5004 ...

Like a Unity player it is the gRPC *client*: Python's `UnityEnvironment` listens on the port and the player
calls `UnityToExternalProto.Exchange` with `mlagents_envs`' generated protobuf messages: the initialisation
handshake (communication version, capabilities), then one `UnityOutputProto` per Academy step (agent info with
the camera and vector observations, reward, the metadata side channel; the behaviour's parameters with the first
one) answered by a `UnityInputProto` (RESET or STEP with the agent's action, environment parameters). A reply
with header status 400 (Python closed) ends it.
"""

from __future__ import annotations

import argparse
import io
import os
import struct
import sys
import uuid

import grpc
import numpy as np
from mlagents_envs.communicator_objects.agent_info_pb2 import AgentInfoProto
from mlagents_envs.communicator_objects.brain_parameters_pb2 import ActionSpecProto, BrainParametersProto
from mlagents_envs.communicator_objects.capabilities_pb2 import UnityRLCapabilitiesProto
from mlagents_envs.communicator_objects.command_pb2 import QUIT, RESET, STEP
from mlagents_envs.communicator_objects.observation_pb2 import NONE, PNG, ObservationProto
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto
from mlagents_envs.communicator_objects.unity_output_pb2 import UnityOutputProto
from mlagents_envs.communicator_objects.unity_rl_initialization_output_pb2 import (
    UnityRLInitializationOutputProto,
)
from mlagents_envs.communicator_objects.unity_to_external_pb2_grpc import UnityToExternalProtoStub
from PIL import Image

from rls3_jax.envs import unity as contract
from rls3_jax.envs.metadata_channel import METADATA_CHANNEL_ID, SCHEMA_VERSION, encode_message

COMMUNICATION_VERSION = "1.5.0"  # ML-Agents' protocol (Academy.k_ApiVersion)
PACKAGE_VERSION = "3.0.0"  # the com.unity.ml-agents version this player pretends to be
ENV_PARAMS_CHANNEL_ID = uuid.UUID("534c891e-810f-11ea-a9d0-822485860400")  # EnvironmentParametersChannel


class FakeUnityPlayer:
    """Connects to `host:port` and serves `sim.IndoorSceneEnv` until Python closes the connection."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "localhost",
        split: str = "train",
        image_size=224,
        png: bool = True,
        behavior_name: str = contract.BEHAVIOR_NAME,
        connect_timeout_s: float = 60.0,
        crash_after_steps: int | None = None,
    ):
        self.address = f"{host}:{int(port)}"
        self.png = png
        self.full_name = f"{behavior_name}?team=0"  # how ML-Agents names a behaviour on the wire
        self.connect_timeout_s = connect_timeout_s
        self.crash_after_steps = crash_after_steps
        self.params = {
            contract.PARAM_SPLIT: float(contract.SPLITS.index(split)),
            contract.PARAM_IMAGE_HEIGHT: float(contract.image_shape(image_size)[0]),
            contract.PARAM_IMAGE_WIDTH: float(contract.image_shape(image_size)[1]),
            contract.PARAM_SCENE: -1.0,
            contract.PARAM_SEED_SERIAL: 0.0,
        }
        self._seed_serial = 0.0
        self._env = None
        self._env_config = None
        self._brain_sent = False
        self._episode = 0
        self._step = 0
        self.steps_served = 0

    # ---- the session ----

    def run(self) -> int:
        """Serve until Python closes; returns the number of steps served. ConnectionError if Python is absent."""
        with grpc.insecure_channel(self.address) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=self.connect_timeout_s)
            except grpc.FutureTimeoutError:
                raise ConnectionError(
                    f"fake Unity player: nothing listens on {self.address} after {self.connect_timeout_s:g} s; "
                    f"start the run with --env unity --unity-port {self.address.rsplit(':', 1)[1]} first"
                ) from None
            stub = UnityToExternalProtoStub(channel)
            init = UnityRLInitializationOutputProto(
                name="rls3_jax fake Unity player",
                communication_version=COMMUNICATION_VERSION,
                package_version=PACKAGE_VERSION,
                capabilities=UnityRLCapabilitiesProto(
                    baseRLCapabilities=True,
                    concatenatedPngObservations=True,
                    compressedChannelMapping=True,
                    hybridActions=True,
                ),
            )
            try:
                reply = self._exchange(stub, UnityOutputProto(rl_initialization_output=init))
                python_version = reply.unity_input.rl_initialization_input.communication_version
                if python_version.split(".")[0] != COMMUNICATION_VERSION.split(".")[0]:
                    raise ConnectionError(
                        f"fake Unity player: Python speaks protocol {python_version}, this player {COMMUNICATION_VERSION}"
                    )
                reply = self._exchange(
                    stub, None
                )  # as Unity does: the second exchange fetches the first command
                while reply.header.status == 200:
                    output = self._handle(reply.unity_input.rl_input)
                    if output is None:
                        break
                    reply = self._exchange(stub, output)
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                    raise
                # Python closed its server without the 400 farewell (e.g. it exited): as Unity, just stop.
        return self.steps_served

    @staticmethod
    def _exchange(stub, output: UnityOutputProto | None) -> UnityMessageProto:
        message = UnityMessageProto()
        message.header.status = 200
        if output is not None:
            message.unity_output.CopyFrom(output)
        return stub.Exchange(message, wait_for_ready=True)

    def _handle(self, rl_input) -> UnityOutputProto | None:
        self._read_side_channels(bytes(rl_input.side_channel))
        if rl_input.command == QUIT:
            return None
        if rl_input.command == RESET:
            return self._reset()
        if rl_input.command == STEP and self._env is not None:
            actions = rl_input.agent_actions.get(self.full_name)
            if actions is not None and len(actions.value) == 1:
                return self._act(np.asarray(actions.value[0].continuous_actions, dtype=np.float32))
        raise RuntimeError(f"fake Unity player: unexpected input (command {rl_input.command}) before a reset")

    # ---- the agent (what an RLS3 Unity project implements in its Agent) ----

    def _reset(self) -> UnityOutputProto:
        from sim import IndoorSceneEnv  # the simulator stands in for the Unity scene

        split = contract.SPLITS[int(self.params[contract.PARAM_SPLIT])]
        # Like a Unity camera sensor, the image size is fixed by the first episode: ML-Agents requires every
        # observation of a connection to keep the shape it was announced with.
        if self._env_config is None:
            size = (
                int(self.params[contract.PARAM_IMAGE_HEIGHT]),
                int(self.params[contract.PARAM_IMAGE_WIDTH]),
            )
        else:
            size = self._env_config[1]
        if self._env_config != (split, size):
            self._env = IndoorSceneEnv(split=split, image_size=size, render_mode="rgb_array")
            self._env_config = (split, size)
        seed = None
        if self.params[contract.PARAM_SEED_SERIAL] != self._seed_serial:
            self._seed_serial = self.params[contract.PARAM_SEED_SERIAL]
            seed = int(self.params[contract.PARAM_SEED_HIGH]) * 65536 + int(
                self.params[contract.PARAM_SEED_LOW]
            )
        scene = int(self.params[contract.PARAM_SCENE])
        obs, info = self._env.reset(seed=seed, options={"scene": scene} if scene >= 0 else None)
        self._episode += 1
        self._step = 0
        message = {"event": "reset", "valid": True, "metadata": info["metadata"]}
        return self._output(obs, 0.0, message)

    def _act(self, action: np.ndarray) -> UnityOutputProto:
        if self.crash_after_steps is not None and self.steps_served >= self.crash_after_steps:
            os._exit(70)  # a crash in the middle of a step: no answer, no farewell
        obs, reward, _, _, info = self._env.step(
            action
        )  # episode ends are Python's to decide (docs/unity.md)
        self._step += 1
        self.steps_served += 1
        message = {"event": "step", "valid": bool(info["valid"]), "metadata": info.get("metadata")}
        return self._output(obs, reward, message)

    # ---- wire format ----

    def _output(self, obs: np.ndarray, reward: float, message: dict) -> UnityOutputProto:
        image = self._env.render()
        camera = ObservationProto(shape=list(image.shape), name="CameraSensor")
        if self.png:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG", compress_level=1)
            camera.compression_type = PNG
            camera.compressed_data = buffer.getvalue()
        else:
            camera.compression_type = NONE
            camera.float_data.data.extend((image.astype(np.float32) / np.float32(255.0)).ravel().tolist())
        vector = ObservationProto(shape=[len(obs)], compression_type=NONE, name="VectorSensor")
        vector.float_data.data.extend(np.asarray(obs, dtype=np.float32).tolist())
        agent = AgentInfoProto(reward=float(reward), done=False, max_step_reached=False, id=0)
        agent.observations.extend([camera, vector])  # Unity sorts sensors by name
        output = UnityOutputProto()
        output.rl_output.agentInfos[self.full_name].value.append(agent)
        if not self._brain_sent:  # the behaviour's parameters travel with its first agent info
            output.rl_initialization_output.brain_parameters.append(
                BrainParametersProto(
                    brain_name=self.full_name,
                    is_training=True,
                    action_spec=ActionSpecProto(num_continuous_actions=contract.N_ACTIONS),
                )
            )
            self._brain_sent = True
        body = encode_message(
            {"version": SCHEMA_VERSION, "episode": self._episode, "step": self._step, **message}
        )
        output.rl_output.side_channel = METADATA_CHANNEL_ID.bytes_le + struct.pack("<i", len(body)) + body
        return output

    def _read_side_channels(self, data: bytes) -> None:
        offset = 0
        while offset < len(data):
            channel = uuid.UUID(bytes_le=data[offset : offset + 16])
            (length,) = struct.unpack_from("<i", data, offset + 16)
            body = data[offset + 20 : offset + 20 + length]
            offset += 20 + length
            if channel == ENV_PARAMS_CHANNEL_ID:
                (key_len,) = struct.unpack_from("<i", body, 0)
                key = body[4 : 4 + key_len].decode("ascii")
                (kind,) = struct.unpack_from("<i", body, 4 + key_len)
                if kind == 0:  # FLOAT; samplers are not part of the contract
                    (self.params[key],) = struct.unpack_from("<f", body, 8 + key_len)
            # other channels (engine configuration, training analytics) do not concern this player


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--port",
        "--mlagents-port",
        type=int,
        default=contract.EDITOR_PORT,
        help="the port the run listens on",
    )
    parser.add_argument("--host", default="localhost")
    parser.add_argument(
        "--split", choices=contract.SPLITS, default="train", help="until the run sends rls3_split"
    )
    parser.add_argument(
        "--image-size", type=int, default=224, help="until the run sends rls3_image_height/width"
    )
    parser.add_argument(
        "--raw-images", action="store_true", help="send uncompressed float images instead of PNG"
    )
    parser.add_argument("--connect-timeout", type=float, default=60.0, help="seconds to wait for the run")
    parser.add_argument(
        "--crash-after-steps", type=int, default=None, help="die mid-step after N steps (testing)"
    )
    # Unity players get -batchmode, -logFile ... from a launching run: accept and ignore them like a build would.
    args, _ = parser.parse_known_args(argv)
    player = FakeUnityPlayer(
        args.port,
        host=args.host,
        split=args.split,
        image_size=args.image_size,
        png=not args.raw_images,
        connect_timeout_s=args.connect_timeout,
        crash_after_steps=args.crash_after_steps,
    )
    try:
        steps = player.run()
    except ConnectionError as e:
        print(e, file=sys.stderr)
        return 1
    print(f"fake Unity player: served {steps} steps on {player.address}; the run closed the connection")
    return 0


if __name__ == "__main__":
    sys.exit(main())
