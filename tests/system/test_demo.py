"""The README's demo command, run as a user would: the community end to end.

``scripts/demo.sh`` starts Mosquitto, every simulator family, the agent and the platform view;
this test runs it for 30 s and reads what the platform printed: the flood alarm and the SOS
as critical events, gate passages, records of every device (one per poll or band, its
point=value pairs), the gate opened by a signed command and a forged one refused
(bad_signature), ids without a gap over records and events, identities
only as pseudonyms (the hub's synthetic residents are regenerated from the demo's seed and
looked for in the output), and an agent log without errors.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

from edge_agent.sim.residents import residents

from support.paths import ROOT



def test_demo_shows_the_community_end_to_end():
    env = dict(os.environ, DEMO_SECONDS="30")
    out = subprocess.run(["bash", "scripts/demo.sh"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = out.stdout
    events = [line for line in text.splitlines() if re.match(r"\s+id\s+\d+\s+\S+\s+\w+\s+(critical|high|normal)\s+\{", line)]
    kinds = {(m.group(1), m.group(2), m.group(3)) for m in
             (re.match(r"\s+id\s+\d+\s+(\S+)\s+(\w+)\s+(\w+)", line) for line in events)}
    assert ("river-1", "alarm", "critical") in kinds, text[-3000:]
    assert ("hub-1", "sos", "critical") in kinds
    assert ("gate-1", "passage", "normal") in kinds
    sos = json.loads(next(line for line in events if " sos " in line).split("critical", 1)[1])
    assert sos["wearer"].startswith("p1:") and "geohash" in sos and "lat" not in sos
    passage = json.loads(next(line for line in events if " passage " in line).split("normal", 1)[1])
    assert passage["plate"].startswith("p1:") and passage["card"].startswith("p1:")
    for device, point in (("river-1", "level_m"), ("elec-101", "energy_total_kWh"), ("elec-102", "voltage_a_V"),
                          ("water-101", "flow_total_m3"), ("hub-1[B-", "hr_bpm")):
        assert re.search(rf"id\s+\d+\s+{re.escape(device)}\S*\s+(\S+=\S+ )*{point}=\S", text), f"no record of {device}"
    summary = re.search(r"records (\d+) \((\d+) values\), events (\d+)", text)
    assert summary and int(summary.group(2)) > int(summary.group(1)) > 0, "the summary counts records and values"
    assert re.search(r"ids 1\.\.\d+, \d+ distinct, 0 missing in between", text)
    for person in residents(6, seed=7):  # the demo's hub: --residents 6 --seed 7
        for raw in (person.id_no, person.mobile, person.name):
            assert raw not in text, "a raw identity reached the platform view"
    results = [json.loads(line.split("] ", 1)[1]) for line in text.splitlines() if "/cmd/result] " in line]
    assert [r["ok"] for r in results] == [True, False], results  # the signed open, then the forged one
    assert results[0]["data"]["acked"] is True
    assert results[1]["error"]["code"] == "bad_signature"
    work = Path(re.search(r"demo: logs and state kept in (\S+)", out.stderr).group(1))
    log = (work / "agent.log").read_text()
    assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
