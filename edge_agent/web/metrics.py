"""``/metrics``: the agent's status in the Prometheus text exposition format 0.0.4.

Why: a fleet already on Prometheus/Grafana scrapes a gateway like any other host, with no
exporter beside it. Every figure comes from the status dict (``agent.status.live``, what
``edge-agent status --json`` prints), so the page, the CLI and the scrape never disagree.

Names are ``edge_agent_*``; counters end in ``_total``; a figure the agent does not know yet
(drain rate before a second sample, the uplink while it is not built) is left out rather than
sent as 0. Label values are escaped per the format (backslash, double quote, newline); device
names label the per-device series (``device``), priorities the backlog's (``priority``).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

__all__ = ["render", "CONTENT_TYPE", "escape_label"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Sample = tuple[Mapping[str, str], Any]  # labels, value


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class _Text:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> None:
        """One metric with its HELP and TYPE; samples whose value is None are left out (and the
        family with them when none is left)."""
        kept = [(labels, value) for labels, value in samples if value is not None]
        if not kept:
            return
        help_text = help_text.replace("\\", "\\\\").replace("\n", "\\n")
        self.lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for labels, value in kept:
            tags = ",".join(f'{k}="{escape_label(str(v))}"' for k, v in labels.items())
            self.lines.append(f"{name}{{{tags}}} {_value(value)}" if tags else f"{name} {_value(value)}")

    def one(self, name: str, kind: str, help_text: str, value: Any) -> None:
        self.family(name, kind, help_text, [({}, value)])


def _seconds(ms: Any) -> float | None:
    return None if ms is None else ms / 1000


def render(status: Mapping[str, Any]) -> str:
    """The exposition text of one status dict (``agent.status.live``), ending in a newline."""
    out = _Text()
    daemon = status.get("daemon") or {}
    out.family("edge_agent_info", "gauge", "The gateway and the agent's version (always 1).",
               [({"gateway": str(status.get("gateway", "")), "site": str(status.get("site", "")),
                  "version": str(daemon.get("version", ""))}, 1)])
    out.one("edge_agent_uptime_seconds", "gauge", "Seconds since the agent started.", daemon.get("uptime_s"))
    out.one("edge_agent_start_time_seconds", "gauge", "When the agent started, seconds since the epoch.",
            _seconds(daemon.get("started")))

    by_prio = status.get("pending_by_prio") or {}
    out.family("edge_agent_backlog_rows", "gauge", "Unsent records and events in the buffer, by priority.",
               [({"priority": p}, n) for p, n in by_prio.items()])
    out.one("edge_agent_backlog_bytes", "gauge", "Bytes of unsent bodies in the buffer (what the wire will carry).",
            status.get("pending_bytes"))
    out.one("edge_agent_backlog_oldest_timestamp_seconds", "gauge", "Time stamp of the oldest unsent row.",
            _seconds(status.get("oldest_pending_ts")))
    out.family("edge_agent_evicted_total", "counter", "Unsent rows dropped because the buffer was full, by priority.",
               [({"priority": p}, n) for p, n in (status.get("evicted") or {}).items()])
    out.one("edge_agent_retained_sent_rows", "gauge", "Sent rows kept in the buffer for replay.",
            status.get("retained_sent"))
    out.one("edge_agent_buffer_file_bytes", "gauge", "Size of the buffer database and its WAL.",
            status.get("file_bytes"))
    out.one("edge_agent_buffer_max_bytes", "gauge", "The buffer's size cap (buffer.max_bytes).",
            status.get("max_bytes"))
    out.one("edge_agent_disk_free_bytes", "gauge", "Free bytes on the buffer's file system.",
            status.get("disk_free_bytes"))
    out.one("edge_agent_write_errors_total", "counter", "Failed buffer commits since start.",
            status.get("write_errors"))

    uplink = status.get("uplink")
    if uplink is not None:
        out.one("edge_agent_uplink_connected", "gauge", "1 while connected to the MQTT broker.",
                uplink.get("connected"))
        out.one("edge_agent_reconnects_total", "counter", "Reconnections to the broker since start.",
                uplink.get("reconnects"))
        out.one("edge_agent_published_items_total", "counter", "Records and events published since start.",
                uplink.get("published_items"))
        out.one("edge_agent_acked_items_total", "counter", "Records and events the broker acknowledged since start.",
                uplink.get("acked_items"))
        out.one("edge_agent_last_publish_timestamp_seconds", "gauge", "When the broker last acknowledged a publish.",
                _seconds(uplink.get("last_publish")))
    drain = status.get("drain") or {}
    out.one("edge_agent_drain_rate_per_second", "gauge", "Rows acknowledged per second over the last minute.",
            drain.get("rate_per_s"))
    out.one("edge_agent_drain_eta_seconds", "gauge", "Estimated seconds until the backlog is sent.", drain.get("eta_s"))

    devices = status.get("devices") or []
    per = [(d, {"device": str(d.get("name", ""))}) for d in devices if isinstance(d, Mapping)]
    out.family("edge_agent_device_up", "gauge", "1 when the device's last poll answered, 0 when it failed "
               "(absent before its first poll).", [(tag, d.get("state") == "online") for d, tag in per
                                                   if d.get("state") in ("online", "offline")])
    out.family("edge_agent_device_polls_total", "counter", "Polls of the device since start.",
               [(tag, d.get("polls")) for d, tag in per])
    out.family("edge_agent_device_errors_total", "counter", "Failed polls of the device since start.",
               [(tag, d.get("errors")) for d, tag in per])
    out.family("edge_agent_device_bad_frames_total", "counter", "Garbled or over-long frames skipped since start.",
               [(tag, d.get("bad_frames")) for d, tag in per])
    out.family("edge_agent_device_last_good_timestamp_seconds", "gauge", "When the device last answered a poll.",
               [(tag, _seconds(d.get("last_good_ms"))) for d, tag in per])

    clock = status.get("clock") or {}
    synced = clock.get("synced")
    out.one("edge_agent_clock_synced", "gauge", "1 when the system clock is synchronised (absent when unknown).",
            None if synced is None else bool(synced))
    out.one("edge_agent_unsynced_items_total", "counter", "Readings and events marked clk unsynced since start.",
            clock.get("unsynced_items"))

    process = status.get("process") or {}
    out.one("edge_agent_process_resident_memory_bytes", "gauge", "Resident set size of the agent.",
            process.get("rss_bytes"))
    out.one("edge_agent_process_cpu_seconds_total", "counter", "User and system CPU time of the agent.",
            process.get("cpu_s"))
    return "\n".join(out.lines) + "\n"
