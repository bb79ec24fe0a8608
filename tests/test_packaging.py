"""The package as an installer gets it: a regular (non-editable) install finds the drivers,
which live in drivers/ in the checkout and are installed as edge_agent.drivers."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_regular_install_ships_the_drivers(tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--disable-pip-version-check",
                    "--target", str(target), str(ROOT)], check=True, capture_output=True, timeout=300)
    assert (target / "edge_agent" / "drivers" / "qdy_level.py").is_file()
    probe = ("import edge_agent, edge_agent.field.registry as r; "
             "assert edge_agent.__file__.startswith(%r), edge_agent.__file__; print(sorted(r.drivers()))" % str(target))
    out = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env={"PYTHONPATH": str(target)},
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    for driver in ("cjt188_meter", "dlt645_meter", "eastron_meter", "gate_controller", "modbus_generic",
                   "qdy_level", "wearables_hub"):
        assert f"'{driver}'" in out.stdout
