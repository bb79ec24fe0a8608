"""A real browser for tests: Debian's Chromium, headless, driven over the DevTools protocol on a
pipe (``--remote-debugging-pipe``: commands on fd 3, answers on fd 4, each a JSON message ended
by a NUL byte), so no WebSocket client and no driver package are needed.

    with Browser(tmp_path) as b:
        b.go("http://127.0.0.1:8080/login")
        b.run("document.querySelector('input[type=password]').value = 'pw'; document.forms[0].submit()",
              wait_load=True)
        html = b.html()
        b.screenshot(tmp_path / "page.png")
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

__all__ = ["Browser", "chromium"]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    def __init__(self, workdir: Path, *, width: int = 1280, height: int = 1000) -> None:
        exe = chromium()
        if exe is None:
            raise RuntimeError("chromium is missing: scripts/test.sh installs Debian's package")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()

        def wire() -> None:  # in the child: fd 3 reads our commands, fd 4 takes its answers
            os.dup2(to_child_r, 3)
            os.dup2(from_child_w, 4)

        self.proc = subprocess.Popen(
            [exe, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
             f"--window-size={width},{height}", f"--user-data-dir={workdir / 'chromium-profile'}",
             "--remote-debugging-pipe", "about:blank"],
            close_fds=False, preexec_fn=wire,  # (close_fds would close 3 and 4 after wire() made them)
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self._buf = b""
        self._id = 0
        self._events: list[dict[str, Any]] = []
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self._call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        self.call("Page.enable")

    # -- the protocol ------------------------------------------------------------------------
    def _send(self, message: dict[str, Any]) -> None:
        os.write(self._to_child, json.dumps(message).encode() + b"\0")

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            if time.monotonic() > deadline:
                raise TimeoutError("chromium did not answer in time")
            chunk = os.read(self._from_child, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed its pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def _call(self, method: str, session: str | None = None, timeout: float = 30.0, **params: Any) -> Any:
        self._id += 1
        message: dict[str, Any] = {"id": self._id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        self._send(message)
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read(deadline)
            if answer.get("id") == self._id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self._events.append(answer)

    def call(self, method: str, **params: Any) -> Any:
        return self._call(method, self._session, **params)

    def _wait_event(self, name: str, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            for i, event in enumerate(self._events):
                if event.get("method") == name:
                    del self._events[: i + 1]
                    return
            self._events.append(self._read(deadline))

    # -- what tests do -----------------------------------------------------------------------
    def go(self, url: str) -> None:
        self._events.clear()
        self.call("Page.navigate", url=url)
        self._wait_event("Page.loadEventFired")

    def run(self, expression: str, *, wait_load: bool = False) -> Any:
        self._events.clear()
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if wait_load:
            self._wait_event("Page.loadEventFired")
        return result.get("result", {}).get("value")

    def html(self) -> str:
        return self.run("document.documentElement.outerHTML")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)["data"]
        path.write_bytes(base64.b64decode(data))

    def close(self) -> None:
        try:
            self._call("Browser.close", timeout=5)
        except Exception:
            pass
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
