"""What the technician's page costs the agent in memory (run on demand, not a test; issue 15).

    .venv/bin/python bench/bench_web.py [--seconds 60] [--devices 20]

The real agent (``edge-agent run``) polls ``--devices`` simulated eastron meters (10 points each)
and a QDY level sensor every 1 s with the broker up, twice in turn: without a ``web`` section,
and with one while a client loads every page (overview, devices, each device's page with its
plots, events, audit) once a second and scrapes ``/metrics`` as Prometheus would. VmRSS is sampled
every second; "steady" is the median of the last 10 s. The page's history grows with time (a
bucket per 10 s for the last hour, per 3 min for 24 h): ``--seconds`` long runs show more of it;
``tests/web/test_history.py`` computes the full 24 h figure.

Goal (issue 15): the page adds at most 5 MiB; nothing when ``web`` is absent (the first run's
RSS against ``bench_rss.py``'s).
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import yaml

from _common import (PY, ROOT, Mosquitto, RssSampler, free_port, log_tail, median, start_agent, start_simulator,
                     summary, write_config)

PASSWORD = "bench-technician"
GOAL_MIB = 5.0


def run(directory: Path, devices: list[tuple[int, str]], seconds: float, web: bool) -> dict[str, float]:
    import subprocess

    sim, _, sim_port = start_simulator(devices)
    broker = Mosquitto(directory).start()
    try:
        cfg = write_config(directory, broker_port=broker.port, sim_port=sim_port, devices=devices, interval="1s")
        port = free_port()
        if web:
            data = yaml.safe_load(cfg.read_text())
            data["web"] = {"listen": f"127.0.0.1:{port}"}
            cfg.write_text(yaml.safe_dump(data, sort_keys=False))
            out = subprocess.run([PY, "-m", "edge_agent.cli", "web", "passwd", "-c", str(cfg)], cwd=ROOT,
                                 input=PASSWORD + "\n", capture_output=True, text=True, timeout=60)
            if out.returncode != 0:
                raise RuntimeError(out.stderr)
        log = directory / "agent.log"
        agent = start_agent(cfg, log)
        names = [f"{d.split('_')[0]}-{u:02d}" for u, d in devices]
        auth = "Basic " + base64.b64encode(f"technician:{PASSWORD}".encode()).decode()
        pages = ["/", "/devices", "/events", "/audit", "/metrics", *(f"/devices/{n}" for n in names)]
        served = 0
        try:
            time.sleep(3)
            with RssSampler(agent.pid) as rss:
                end = time.monotonic() + seconds
                while time.monotonic() < end:
                    if agent.popen.poll() is not None:
                        raise RuntimeError(f"the agent exited:\n{log_tail(log)}")
                    if web:
                        for path in pages:
                            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}",
                                                         headers={"Authorization": auth})
                            with urllib.request.urlopen(req, timeout=10) as resp:
                                resp.read()
                            served += 1
                    time.sleep(1.0)
                values = rss.values()
                steady = median(rss.values(since=rss.samples[-1][0] - 10))
        finally:
            agent.stop()
        return {"steady": steady, "max": max(values), "served": served}
    finally:
        broker.stop()
        sim.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--devices", type=int, default=20)
    args = ap.parse_args()
    devices = [(1, "qdy_level")] + [(u, "eastron_meter") for u in range(2, args.devices + 2)]
    results = {}
    for web in (False, True):
        with tempfile.TemporaryDirectory(prefix="bench-web-") as tmp:
            results[web] = run(Path(tmp), devices, args.seconds, web)
            r = results[web]
            print(f"{'with' if web else 'without'} web: steady {r['steady']:.1f} MiB, max {r['max']:.1f} MiB"
                  + (f", {r['served']:,} pages and scrapes served" if web else ""), flush=True)
    added = results[True]["steady"] - results[False]["steady"]
    summary(f"the page adds {added:+.1f} MiB steady ({results[True]['max'] - results[False]['max']:+.1f} MiB at the max)",
            f"{results[False]['steady']:.1f} MiB: the same agent without a web section",
            f"{results[True]['steady'] / results[False]['steady']:.2f}x", f"<= {GOAL_MIB:.0f} MiB added",
            added <= GOAL_MIB)
    return 0


if __name__ == "__main__":
    sys.exit(main())
