"""What ``edge-agent status`` shows, gathered two ways, and how it is printed.

- ``live(agent)``: the running agent's own view, answered over the control socket
  (``control.py``): uplink state, backlog with drain rate and ETA, per-device health, the key
  in use, clock, process figures.
- ``from_buffer(settings)``: the daemon is down (or does not answer): what the buffer file
  says, read-only. The uplink, drain and device health need the daemon and are ``null``/unknown.
  None when there is no buffer yet in the file (a daemon still starting): the CLI shows it as
  "no buffer yet", like an absent file.

Both give one dict with the same keys; ``source`` says which (``daemon`` or ``buffer file``).
The buffer's figures are top-level keys as ``BufferStats`` names them (``pending``,
``pending_by_prio``, ``next_id``, ``evicted``, ...), which scripts and tests read. They count
rows: a record (one poll of a device or unit, its values together) or an event. The CLI adds
``pseudonym_key`` (the key file as it is now) and, when missing, ``clock`` (its own reading).

``health_figures(agent)`` is also the agent's part of the ``R/state`` message.
"""

from __future__ import annotations

import os
import time
from typing import Any

from .. import __version__
from .procstat import cpu_seconds, disk_free_bytes, rss_bytes
from ..units import format_duration, format_size

__all__ = ["live", "from_buffer", "render", "clock_line", "key_line", "health_figures", "device_counts",
           "SOURCE_DAEMON", "SOURCE_FILE"]

SOURCE_DAEMON = "daemon"
SOURCE_FILE = "buffer file"
STATES = ("online", "offline", "unknown")


def device_counts(devices: list[dict[str, Any]]) -> dict[str, int]:
    counts = dict.fromkeys(STATES, 0)
    for d in devices:
        counts[d.get("state", "unknown") if d.get("state") in counts else "unknown"] += 1
    return counts


def health_figures(agent: Any) -> dict[str, Any]:
    """The agent's health as ``R/state`` carries it (docs/protocol.md, "State")."""
    cpu = cpu_seconds()
    pct, _ = agent.cpu_meter.rate(cpu)
    clock = agent.clock.state
    devices = agent.health.snapshot()
    return {
        "uptime_s": round(time.monotonic() - agent.started_mono, 1),
        "write_errors": agent.writer.stats.failures if agent.writer else 0,
        "devices": device_counts(devices),
        "bad_frames": {d["name"]: d["bad_frames"] for d in devices if d.get("bad_frames")},
        "cpu_s": round(cpu, 2),
        "cpu_pct": None if pct is None else round(pct * 100, 1),
        "rss_bytes": rss_bytes(),
        "disk_free_bytes": disk_free_bytes(agent.settings.buffer.path),
        "clock": "unknown" if clock.synced is None else "synced" if clock.synced else "unsynced",
    }


def _key_in_use(agent: Any) -> dict[str, Any] | None:
    ring = getattr(agent.privacy, "keys", None)
    if ring is None:
        return None
    return {"active_version": ring.active, "fingerprint": ring.fingerprints()[ring.active]}


def live(agent: Any) -> dict[str, Any]:
    """The running agent's status (the control socket's ``status`` reply)."""
    s = agent.settings
    stats = agent.buffer.stats()
    figures = health_figures(agent)
    uplink = agent.uplink.stats() if agent.uplink is not None else None
    rate, span = agent.drain_meter.rate(uplink.acked_items) if uplink is not None else (None, 0.0)
    devices = agent.health.snapshot()
    clock = agent.clock.state
    if stats.pending == 0:
        eta = 0.0
    elif rate and uplink is not None and uplink.connected:
        eta = round(stats.pending / rate, 1)
    else:
        eta = None
    return {
        "source": SOURCE_DAEMON,
        "gateway": s.gateway.id, "site": s.gateway.site,
        "daemon": {"pid": os.getpid(), "version": __version__, "started": agent.started_ms,
                   "uptime_s": figures["uptime_s"]},
        "buffer": str(s.buffer.path), "max_bytes": s.buffer.max_bytes, **vars(stats),
        "write_errors": figures["write_errors"],
        "uplink": None if uplink is None else {
            "broker": agent.uplink.address, "connected": uplink.connected, "last_publish": uplink.last_ack_at,
            "reconnects": uplink.reconnects, "last_error": uplink.last_error,
            "published_items": uplink.published_items, "acked_items": uplink.acked_items},
        "drain": {"rate_per_s": None if rate is None else round(rate, 2), "window_s": round(span, 1), "eta_s": eta},
        "devices": devices,
        "device_counts": figures["devices"],
        "clock": {"synced": clock.synced, "source": clock.source, "detail": clock.detail,
                  "unsynced_items": agent.intake.unsynced_items if agent.intake is not None else 0},
        "key_in_use": _key_in_use(agent),
        "process": {"cpu_s": figures["cpu_s"], "cpu_pct": figures["cpu_pct"], "rss_bytes": figures["rss_bytes"]},
        "disk_free_bytes": figures["disk_free_bytes"],
    }


def from_buffer(settings: Any) -> dict[str, Any] | None:
    """Status from the buffer file alone: None while the file holds no buffer yet (a daemon
    starting has made the file, not yet its schema: ``buffer.stats``), ``BufferError`` when it
    cannot be read or is another program's database."""
    from ..buffer.stats import read_stats_if_made

    stats = read_stats_if_made(settings.buffer.path)
    if stats is None:
        return None
    devices = [{"name": d.name, "bus": d.bus, "state": "unknown"} for d in settings.devices if d.enabled]
    return {
        "source": SOURCE_FILE,
        "gateway": settings.gateway.id, "site": settings.gateway.site,
        "daemon": None,
        "buffer": str(settings.buffer.path), "max_bytes": settings.buffer.max_bytes, **vars(stats),
        "uplink": None,
        "drain": {"rate_per_s": None, "window_s": 0.0, "eta_s": 0.0 if stats.pending == 0 else None},
        "devices": devices,
        "device_counts": device_counts(devices),
        "disk_free_bytes": disk_free_bytes(settings.buffer.path),
    }


# -- text ----------------------------------------------------------------------------------------
def _age(ms: int | None, now_ms: int) -> str:
    return "never" if ms is None else f"{format_duration(max(0, now_ms - ms) / 1000)} ago"


def _uplink_line(data: dict[str, Any], now_ms: int) -> str:
    up = data.get("uplink")
    if up is None:
        return f"not running (the daemon is down); last publish {_age(data.get('last_sent_at'), now_ms)}"
    state = f"connected to {up['broker']}" if up["connected"] else f"NOT connected to {up['broker']}"
    line = f"{state}; last publish {_age(up['last_publish'] or data.get('last_sent_at'), now_ms)}; " \
           f"{up['reconnects']} reconnect(s)"
    return line + (f"; last error: {up['last_error']}" if up.get("last_error") else "")


def _drain_line(data: dict[str, Any]) -> str:
    drain = data.get("drain") or {}
    rate, eta = drain.get("rate_per_s"), drain.get("eta_s")
    if data.get("uplink") is None:
        text = "none while the daemon is down"
    elif rate is None:
        text = "not measured yet (needs a second of history)"
    else:
        window = format_duration(drain.get('window_s') or 0)
        text = f"{rate:g} records/s acked (events included) over the last {window}"
    if data.get("pending", 0) == 0:
        return text + "; nothing waits"
    if eta is None:
        why = "disconnected" if data.get("uplink") and not data["uplink"]["connected"] else "no drain"
        return text + f"; ETA unknown ({why})"
    return text + f"; ETA {format_duration(eta)}"


def _device_lines(data: dict[str, Any], now_ms: int) -> list[str]:
    devices = data.get("devices") or []
    counts = data.get("device_counts") or device_counts(devices)
    head = ", ".join(f"{counts.get(s, 0)} {s}" for s in STATES)
    if data.get("source") != SOURCE_DAEMON:
        return [f"devices       {head} (health is known only while the daemon runs)"]
    lines = [f"devices       {head}"]
    width = max((len(d["name"]) for d in devices), default=0)
    for d in devices:
        line = (f"  {d['name']:<{width}}  {d['state']:<7}  last good {_age(d.get('last_good_ms'), now_ms)}; "
                f"{d.get('polls', 0)} poll(s), {d.get('errors', 0)} error(s)")
        if d.get("events"):
            line += f", {d['events']} event(s)"
        if d.get("bad_frames"):
            line += f", {d['bad_frames']} bad frame(s)"
        if d.get("last_error"):
            line += f"; last error {_age(d.get('last_error_ms'), now_ms)}: {d['last_error']}"
        lines.append(line)
    return lines


def clock_line(clock: dict[str, Any] | None) -> str:
    if not clock:
        return "unknown"
    synced = clock.get("synced")
    head = ("synchronised" if synced else "unknown (counted as synchronised)" if synced is None
            else "NOT synchronised: readings and events are marked clk \"unsynced\"")
    tail = f" ({clock.get('source')}: {clock.get('detail')})"
    if clock.get("unsynced_items"):
        tail += f"; {clock['unsynced_items']} item(s) marked unsynced since start"
    return head + tail


def key_line(key: dict[str, Any], in_use: dict[str, Any] | None) -> str:
    if key["state"] == "ok":
        line = f"v{key['active_version']} {key['fingerprint']} ({key['file']})"
        if in_use and in_use.get("active_version") != key["active_version"]:
            line += f"; the daemon still uses v{in_use['active_version']} until it restarts"
        return line
    return "none configured" if key["state"] == "none" else f"unreadable: {key['reason']}"


def render(data: dict[str, Any], now_ms: int | None = None) -> list[str]:
    """The status as lines of text (``edge-agent status`` without ``--json``)."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    lines = [f"gateway       {data['gateway']} (site {data.get('site')})"]
    daemon = data.get("daemon")
    if daemon:
        lines.append(f"source        daemon (pid {daemon['pid']}, version {daemon['version']}, "
                     f"up {format_duration(daemon['uptime_s'])}) over {data.get('control_socket', 'its control socket')}")
    else:
        why = data.get("fallback_reason") or "the daemon did not answer"
        lines.append(f"source        buffer file ({why})")
    lines.append(f"uplink        {_uplink_line(data, now_ms)}")
    lanes = "  ".join(f"{k} {v}" for k, v in data["pending_by_prio"].items())
    lines.append(f"backlog       {data['pending']} unsent records and events ({format_size(data['pending_bytes'])}), "
                 f"oldest {_age(data['oldest_pending_ts'], now_ms)}")
    lines.append(f"  by priority {lanes}")
    lines.append(f"  drain       {_drain_line(data)}")
    evicted = "  ".join(f"{k} {v}" for k, v in data["evicted"].items())
    lines.append(f"evicted       {evicted}  (unsent rows dropped because the buffer was full)")
    if data.get("write_errors"):
        lines.append(f"write errors  {data['write_errors']} failed buffer commit(s) since start")
    free = data.get("disk_free_bytes")
    lines.append(f"buffer        {data['buffer']} ({format_size(data['file_bytes'])} of "
                 f"{format_size(data.get('max_bytes') or 0)} cap; "
                 f"{'disk free unknown' if free is None else format_size(free) + ' free on its disk'})")
    lines.append(f"retained sent {data['retained_sent']} records and events")
    lines.append(f"next id       {data['next_id']}")
    lines.extend(_device_lines(data, now_ms))
    lines.append(f"clock         {clock_line(data.get('clock'))}")
    lines.append(f"pseudonym key {key_line(data['pseudonym_key'], data.get('key_in_use'))}")
    process = data.get("process")
    if process:
        cpu = "?" if process.get("cpu_pct") is None else f"{process['cpu_pct']:g}%"
        rss = "?" if process.get("rss_bytes") is None else format_size(process["rss_bytes"])
        lines.append(f"process       CPU {cpu} over the last minute ({process['cpu_s']:g} s in all), RSS {rss}")
    return lines
