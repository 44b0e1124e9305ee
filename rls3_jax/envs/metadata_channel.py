"""The ML-Agents side channel that carries each sample's ground-truth metadata from Unity as JSON.

Wire format (one ML-Agents side-channel message per reset and per step, Unity -> Python): the UTF-8 bytes of
one JSON object (docs/unity.md, "Metadata side channel"):

    {"version": 1, "event": "reset" | "step", "episode": int, "step": int,
     "valid": bool, "metadata": {...} | null}

`metadata` follows `sim.IndoorSceneEnv`'s schema and is required on resets and on valid steps. The framing
(channel UUID, then message length, then bytes) is ML-Agents' own; this module only fixes the UUID and the body.
"""

from __future__ import annotations

import json
import uuid

from mlagents_envs.side_channel.side_channel import IncomingMessage, SideChannel

METADATA_CHANNEL_ID = uuid.UUID("04889949-fee0-483f-a741-e531b22af6eb")
SCHEMA_VERSION = 1
EVENTS = ("reset", "step")


def encode_message(message: dict) -> bytes:
    """The body a Unity player sends: compact UTF-8 JSON."""
    return json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def decode_message(body: bytes) -> dict:
    """Parse and check one message body; ValueError with a one-line reason when it breaks the schema."""
    try:
        message = json.loads(bytes(body).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"metadata side channel: message is not UTF-8 JSON ({e})") from None
    if not isinstance(message, dict):
        raise ValueError(f"metadata side channel: expected a JSON object, got {type(message).__name__}")
    missing = [k for k in ("version", "event", "episode", "step", "valid", "metadata") if k not in message]
    if missing:
        raise ValueError(f"metadata side channel: message lacks keys {missing}")
    if message["version"] != SCHEMA_VERSION:
        raise ValueError(
            f"metadata side channel: schema version {message['version']!r}, this rls3_jax reads {SCHEMA_VERSION}"
        )
    if message["event"] not in EVENTS:
        raise ValueError(
            f"metadata side channel: unknown event {message['event']!r}; expected one of {EVENTS}"
        )
    if not isinstance(message["valid"], bool):
        raise ValueError(f"metadata side channel: 'valid' must be true/false, got {message['valid']!r}")
    metadata = message["metadata"]
    needs_metadata = message["event"] == "reset" or message["valid"]
    if needs_metadata:
        if not isinstance(metadata, dict):
            raise ValueError(f"metadata side channel: {message['event']} message without a metadata object")
        lacking = [
            k for k in ("scene", "scene_name", "split", "moved", "objects", "camera") if k not in metadata
        ]
        if lacking:
            raise ValueError(f"metadata side channel: metadata lacks keys {lacking}")
    return message


class MetadataChannel(SideChannel):
    """Collects the decoded messages Unity sends during one exchange; the adapter drains them with `take()`."""

    def __init__(self) -> None:
        super().__init__(METADATA_CHANNEL_ID)
        self._received: list[dict] = []
        self._error: str | None = None

    def on_message_received(self, msg: IncomingMessage) -> None:
        # Raising here would surface as a bare exception inside mlagents_envs; keep the first error for take().
        try:
            self._received.append(decode_message(msg.get_raw_bytes()))
        except ValueError as e:
            self._error = self._error or str(e)

    def take(self) -> list[dict]:
        """The messages received since the last call (oldest first); ValueError if one was malformed."""
        received, error = self._received, self._error
        self._received, self._error = [], None
        if error is not None:
            raise ValueError(error)
        return received
