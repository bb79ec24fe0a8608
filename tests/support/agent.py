"""The agent as a subprocess, as tests drive it: ``edge-agent run`` with its output in a log file,
stopped with SIGTERM (a clean stop exits 0), ``status --json``, other verbs, and waiting for a
condition with a deadline::

    agent = start_agent(config, log)
    try:
        wait_until(lambda: status(config)["pending"] == 0, 30, "the backlog to drain")
    finally:
        stop_agent(agent, log)

Every verb runs as ``python -m edge_agent.cli`` with this interpreter, so the tests use the
checkout's package whether or not the ``edge-agent`` script is on PATH.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Mapping

from support.waiting import wait_until

__all__ = ["start_agent", "stop_agent", "status", "wait_until", "cli"]

AGENT = [sys.executable, "-m", "edge_agent.cli"]


def start_agent(config: Path, log: Path, *extra_args: str, env: Mapping[str, str] | None = None) -> subprocess.Popen:
    """``edge-agent run -c CONFIG [EXTRA_ARGS...]``, stdout and stderr appended to ``log``;
    ``env``: variables set for the agent on top of this process's environment."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen([*AGENT, "run", "-c", str(config), *extra_args],
                                stdout=out, stderr=subprocess.STDOUT,
                                env=None if env is None else {**os.environ, **env})


def stop_agent(proc: subprocess.Popen, log: Path, timeout: float = 30) -> None:
    """SIGTERM, then require exit code 0 within ``timeout`` seconds (killed if it does not stop);
    a failure shows the end of the log."""
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"agent did not stop on SIGTERM\n{log.read_text()[-3000:]}")
    assert code == 0, log.read_text()[-3000:]


def cli(*args: str, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """``edge-agent ARGS...`` run to completion; text output captured."""
    return subprocess.run([*AGENT, *args], capture_output=True, text=True, input=stdin, timeout=timeout)


def status(config: Path) -> dict:
    """``edge-agent status -c CONFIG --json``, which must succeed."""
    out = cli("status", "-c", str(config), "--json", timeout=30)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)
