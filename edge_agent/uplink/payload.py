"""The bytes of a telemetry or events message: compact JSON, or with ``mqtt.compress`` the same
JSON as one xz stream (docs/protocol.md, "Compressed payloads").

Why xz (LZMA2, preset 0) and not zlib, measured on W2's telemetry (20 devices x 20 uint16
points every 100 ms, ``bench/bench_compress.py``): zlib gives 2.6x (level 1) to 2.9x (level 6)
fewer bytes, with or without a preset dictionary, short of the 3x issue 13 asks of an option
that costs every platform a decoder; xz preset 0 gives 3.4x at W2's ~31 records a message and
4x at ``batch_max`` (500), for under 1 us of CPU a value (the whole agent spends ~35 at W2, and
its CPU with and without compression differs by less than the noise between runs). Below ~15
records a message it gives less than 3x: the option pays on metered links that batch, and on
backlogs. Preset 0: presets 1-3 gain a few % for 1.5-3x the CPU.

How a platform tells the two apart, on MQTT 3.1.1 and 5 alike: a JSON payload is a JSON object
and starts with ``{`` (0x7B); an xz stream starts with its magic ``FD 37 7A 58 5A 00``, and 0xFD
never begins UTF-8 text. Nothing else is published on these topics. On MQTT 5 a compressed
message also carries the content type ``application/x-xz``, for brokers and rule engines that
route on it; a hop over 3.1.1 (a bridge) drops properties, so the first byte is the rule.
``edge_agent.platform.decode_payload`` is the reference decoder.

Each message is decided on its own: one whose xz stream would not be smaller than its JSON
goes as JSON (xz's frame costs ~60 bytes: a lone event of ~170 bytes grows to ~200), so with
``compress`` on a platform reads both forms on the same topic, by that first byte.

The xz check is CRC32 (every xz decoder has it; CRC64, Python's default, is 4 bytes longer);
the dictionary is 64 KiB (so a decoder needs little memory).
The output is deterministic: a message sent again after a reconnect differs from the first
only where its JSON does (``sent``). R/state, its Last Will and R/cmd/result stay plain JSON
(small, and read by tools that do not decode).
"""

from __future__ import annotations

import json
import lzma
from typing import Any

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from ..settings import MqttSettings

__all__ = ["Payloads", "encode", "XZ_MAGIC", "CONTENT_TYPE"]

XZ_MAGIC = b"\xfd7zXZ\x00"
CONTENT_TYPE = "application/x-xz"  # MQTT 5 only, on compressed messages only
# `xz --check=crc32 --lzma2=preset=0,dict=64KiB`: preset 0's own 256 KiB dictionary costs ~230 us
# a message to set up, 64 KiB ~40 us, and finds as much (a record's keys repeat within ~400 bytes)
_XZ = {"format": lzma.FORMAT_XZ, "check": lzma.CHECK_CRC32,
       "filters": [{"id": lzma.FILTER_LZMA2, "preset": 0, "dict_size": 64 * 1024}]}


def encode(obj: Any) -> bytes:
    """Compact UTF-8 JSON, as on the wire."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class Payloads:
    """Encodes the data messages (telemetry, events, replays) as the settings say; the drain and
    the command channel share one."""

    def __init__(self, *, compress: bool = False, mqtt5: bool = False) -> None:
        self.compress = compress
        self._xz_kwargs: dict[str, Any] = {}
        if compress and mqtt5:
            props = Properties(PacketTypes.PUBLISH)
            props.ContentType = CONTENT_TYPE
            self._xz_kwargs = {"properties": props}

    @classmethod
    def of(cls, mqtt: MqttSettings) -> "Payloads":
        return cls(compress=mqtt.compress, mqtt5=mqtt.protocol == "5")

    def encode(self, obj: Any) -> tuple[bytes, dict[str, Any]]:
        """The payload, and what ``client.publish`` gets besides topic, payload and QoS (the
        content type of a compressed message on MQTT 5; else nothing)."""
        data = encode(obj)
        if self.compress:
            packed = lzma.compress(data, **_XZ)
            if len(packed) < len(data):
                return packed, self._xz_kwargs
        return data, {}
