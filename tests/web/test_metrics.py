"""``/metrics`` (``web/metrics.py``) as Prometheus reads it: the text is parsed by prometheus_client's
own text-format parser, which runs in ``tests/.prom-venv`` (``scripts/setup.sh`` makes it; the
agent never imports it), and the families, types, labels and values are checked against the status."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from edge_agent.web.metrics import CONTENT_TYPE, escape_label, render
from support.paths import ROOT

PROM_PY = ROOT / "tests" / ".prom-venv" / "bin" / "python"
PARSE = """
import json, sys
from prometheus_client.parser import text_string_to_metric_families
out = [{"name": f.name, "type": f.type, "help": f.documentation,
        "samples": [[s.name, s.labels, s.value] for s in f.samples]}
       for f in text_string_to_metric_families(sys.stdin.read())]
print(json.dumps(out))
"""
NOW = 1732380000000
ODD = 'pump "7" \\ north\nside'  # every character the format escapes in a label value
STATUS: dict[str, Any] = {
    "source": "daemon", "gateway": "gw-001", "site": "pump-station-3",
    "daemon": {"pid": 4242, "version": "0.1.0", "started": NOW - 7_200_000, "uptime_s": 7200.5},
    "buffer": "/var/lib/edge-agent/buffer.db", "max_bytes": 536870912, "pending": 1234, "pending_bytes": 98765,
    "oldest_pending_ts": NOW - 600_000, "pending_by_prio": {"critical": 1, "high": 33, "normal": 1200},
    "retained_sent": 5000, "last_sent_at": NOW - 2000, "file_bytes": 3145728, "next_id": 6235,
    "evicted": {"critical": 0, "high": 0, "normal": 17}, "write_errors": 1,
    "uplink": {"broker": "broker.example:8883", "connected": True, "last_publish": NOW - 1500, "reconnects": 2,
               "last_error": None, "published_items": 5001, "acked_items": 5000},
    "drain": {"rate_per_s": 41.5, "window_s": 60.0, "eta_s": 29.7},
    "devices": [
        {"name": "river-1", "bus": "rs485", "polls": 1440, "errors": 0, "bad_frames": 0, "last_good_ms": NOW - 4000,
         "state": "online"},
        {"name": ODD, "bus": "lines", "polls": 5, "errors": 5, "bad_frames": 2, "last_good_ms": None,
         "state": "offline"},
        {"name": "<script>", "bus": "lines", "polls": 0, "errors": 0, "bad_frames": 0, "last_good_ms": None,
         "state": "unknown"}],
    "device_counts": {"online": 1, "offline": 1, "unknown": 1},
    "clock": {"synced": False, "source": "adjtimex", "detail": "not synchronised", "unsynced_items": 12},
    "key_in_use": {"active_version": 2, "fingerprint": "3f9a6c01d2e4"},
    "process": {"cpu_s": 12.34, "cpu_pct": 1.7, "rss_bytes": 32505856},
    "disk_free_bytes": 7516192768,
}


def parsed(text: str) -> dict[str, dict[str, Any]]:
    """prometheus_client's reading of ``text``: family name -> {type, help, samples}."""
    if not PROM_PY.exists():
        pytest.fail("tests/.prom-venv is missing: run scripts/setup.sh (it installs prometheus_client there)")
    done = subprocess.run([str(PROM_PY), "-c", PARSE], input=text, text=True, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {f["name"]: f for f in json.loads(done.stdout)}


def sample(families: dict[str, dict[str, Any]], name: str, **labels: str) -> float:
    family = families[name.removesuffix("_total")]
    [value] = [v for n, tags, v in family["samples"] if n == name and tags == labels]
    return value


def test_the_text_parses_and_carries_every_figure() -> None:
    text = render(STATUS)
    families = parsed(text)
    assert sample(families, "edge_agent_backlog_rows", priority="normal") == 1200
    assert sample(families, "edge_agent_backlog_rows", priority="critical") == 1
    assert sample(families, "edge_agent_backlog_bytes") == 98765
    assert sample(families, "edge_agent_evicted_total", priority="normal") == 17
    assert families["edge_agent_evicted"]["type"] == "counter"
    assert sample(families, "edge_agent_published_items_total") == 5001
    assert sample(families, "edge_agent_acked_items_total") == 5000
    assert sample(families, "edge_agent_reconnects_total") == 2
    assert sample(families, "edge_agent_uplink_connected") == 1
    assert sample(families, "edge_agent_drain_rate_per_second") == 41.5
    assert sample(families, "edge_agent_drain_eta_seconds") == 29.7
    assert sample(families, "edge_agent_device_polls_total", device="river-1") == 1440
    assert sample(families, "edge_agent_device_errors_total", device=ODD) == 5
    assert sample(families, "edge_agent_device_bad_frames_total", device=ODD) == 2
    assert sample(families, "edge_agent_device_up", device="river-1") == 1
    assert sample(families, "edge_agent_device_up", device=ODD) == 0
    assert [t for _, t, _ in families["edge_agent_device_up"]["samples"]] == [{"device": "river-1"}, {"device": ODD}]
    assert sample(families, "edge_agent_device_last_good_timestamp_seconds", device="river-1") == (NOW - 4000) / 1000
    assert sample(families, "edge_agent_clock_synced") == 0
    assert sample(families, "edge_agent_unsynced_items_total") == 12
    assert sample(families, "edge_agent_process_resident_memory_bytes") == 32505856
    assert sample(families, "edge_agent_process_cpu_seconds_total") == 12.34
    assert sample(families, "edge_agent_buffer_file_bytes") == 3145728
    assert sample(families, "edge_agent_buffer_max_bytes") == 536870912
    assert sample(families, "edge_agent_disk_free_bytes") == 7516192768
    assert sample(families, "edge_agent_uptime_seconds") == 7200.5
    assert sample(families, "edge_agent_write_errors_total") == 1
    assert sample(families, "edge_agent_info", gateway="gw-001", site="pump-station-3", version="0.1.0") == 1
    assert sample(families, "edge_agent_device_polls_total", device="<script>") == 0  # as it is: not HTML


def test_every_family_has_one_help_and_one_type_and_no_series_twice() -> None:
    text = render(STATUS)
    assert text.endswith("\n") and "\n\n" not in text
    helps = re.findall(r"^# HELP (\S+) ", text, re.M)
    types = re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M)
    assert len(helps) == len(set(helps)) and helps == [name for name, _ in types]
    assert all(name.startswith("edge_agent_") and re.fullmatch(r"[a-z_]+", name) for name in helps)
    assert all(name.endswith("_total") == (kind == "counter") for name, kind in types)
    series = [line.rsplit(" ", 1)[0] for line in text.splitlines() if not line.startswith("#")]
    assert len(series) == len(set(series))
    for line in text.splitlines():  # each sample belongs to the family announced last
        if line.startswith("# TYPE"):
            current = line.split()[2]
        elif not line.startswith("#"):
            assert re.match(rf"{current}[{{ ]", line), line


def test_what_is_not_known_is_left_out_not_sent_as_zero() -> None:
    bare = dict(STATUS, uplink=None, drain={"rate_per_s": None, "window_s": 0.0, "eta_s": None},
                clock={"synced": None, "source": "adjtimex", "detail": "?", "unsynced_items": 0},
                oldest_pending_ts=None, disk_free_bytes=None,
                process={"cpu_s": 1.0, "cpu_pct": None, "rss_bytes": None})
    families = parsed(render(bare))
    for gone in ("edge_agent_uplink_connected", "edge_agent_reconnects", "edge_agent_drain_rate_per_second",
                 "edge_agent_drain_eta_seconds", "edge_agent_clock_synced", "edge_agent_disk_free_bytes",
                 "edge_agent_backlog_oldest_timestamp_seconds", "edge_agent_process_resident_memory_bytes"):
        assert gone not in families, gone
    assert sample(families, "edge_agent_backlog_rows", priority="high") == 33


def test_label_values_are_escaped_as_the_format_says() -> None:
    assert escape_label(ODD) == 'pump \\"7\\" \\\\ north\\nside'
    assert 'device="pump \\"7\\" \\\\ north\\nside"' in render(STATUS)
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"
