"""``edge-agent simulate ...`` as a subprocess, as an installer runs it on a bench: start it, wait
for a line it prints, stop it with SIGTERM (its normal end)."""

from __future__ import annotations

import queue
import signal
import subprocess
import sys
import threading
import time


def start_simulator(*args: str) -> subprocess.Popen:
    """``edge-agent simulate ARGS``; its printed lines go to ``proc.printed`` (a queue) as they come."""
    proc = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "simulate", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.printed = queue.Queue()  # type: ignore[attr-defined]
    threading.Thread(target=lambda: [proc.printed.put(x) for x in proc.stdout], daemon=True).start()
    return proc


def line_with(proc: subprocess.Popen, text: str, timeout: float = 10.0) -> str:
    """The next printed line holding ``text`` (earlier ones are passed over)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            out = proc.printed.get(timeout=0.1)  # type: ignore[attr-defined]
        except queue.Empty:
            assert proc.poll() is None, f"simulator exited: {proc.stderr.read()}"
            continue
        if text in out:
            return out.strip()
    raise AssertionError(f"no line with {text!r}")


def stop_simulator(proc: subprocess.Popen) -> int:
    """SIGTERM, then its exit code (killed, and TimeoutExpired raised, when it does not end in 5 s)."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
