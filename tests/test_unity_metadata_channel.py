"""The metadata side channel's message schema (docs/unity.md) and its ML-Agents framing."""

import struct

import pytest

pytest.importorskip("mlagents_envs")

from mlagents_envs.side_channel.side_channel_manager import SideChannelManager  # noqa: E402

from rls3_jax.envs.metadata_channel import (  # noqa: E402
    METADATA_CHANNEL_ID,
    MetadataChannel,
    decode_message,
    encode_message,
)
from sim import IndoorSceneEnv  # noqa: E402


def sample_metadata():
    env = IndoorSceneEnv(image_size=16)
    return env.reset(seed=0)[1]["metadata"]


def framed(body: bytes) -> bytes:
    return METADATA_CHANNEL_ID.bytes_le + struct.pack("<i", len(body)) + body


def test_round_trip_through_mlagents_side_channel_manager():
    md = sample_metadata()
    messages = [
        {"version": 1, "event": "reset", "episode": 1, "step": 0, "valid": True, "metadata": md},
        {"version": 1, "event": "step", "episode": 1, "step": 1, "valid": False, "metadata": None},
    ]
    channel = MetadataChannel()
    SideChannelManager([channel]).process_side_channel_message(
        b"".join(framed(encode_message(m)) for m in messages)
    )
    assert channel.take() == messages  # floats survive JSON exactly, order is kept
    assert channel.take() == []


def test_non_ascii_names_survive():
    md = sample_metadata()
    md["objects"][0]["name"] = "tasse à café"
    message = {"version": 1, "event": "step", "episode": 1, "step": 3, "valid": True, "metadata": md}
    assert decode_message(encode_message(message)) == message


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xff\xfe", "not UTF-8 JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"version": 1}', "lacks keys"),
        (
            b'{"version": 2, "event": "step", "episode": 1, "step": 1, "valid": false, "metadata": null}',
            "version 2",
        ),
        (
            b'{"version": 1, "event": "move", "episode": 1, "step": 1, "valid": false, "metadata": null}',
            "unknown event",
        ),
        (
            b'{"version": 1, "event": "step", "episode": 1, "step": 1, "valid": 1, "metadata": null}',
            "true/false",
        ),
        (
            b'{"version": 1, "event": "step", "episode": 1, "step": 1, "valid": true, "metadata": null}',
            "without a metadata",
        ),
        (
            b'{"version": 1, "event": "reset", "episode": 1, "step": 0, "valid": true, "metadata": {"scene": 0}}',
            "metadata lacks",
        ),
    ],
)
def test_malformed_messages_are_named(body, reason):
    with pytest.raises(ValueError, match=reason):
        decode_message(body)
    channel = MetadataChannel()
    SideChannelManager([channel]).process_side_channel_message(framed(body))
    with pytest.raises(ValueError, match=reason):
        channel.take()
