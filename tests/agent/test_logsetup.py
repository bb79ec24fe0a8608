"""Logging: journald's format under systemd, the rotated file, the repeat limiter, and the scrubber
on every handler.

- ``edge-agent run`` with ``$JOURNAL_STREAM`` naming its stderr writes ``<N>`` syslog priorities
  and no timestamps; with a variable that names another stream, timestamps as usual.
- ``--log-file`` rotates at ``--log-max`` keeping ``--log-keep`` files, each mode 0640.
- Identical warnings and errors: the first, then one count per window, even with nothing else
  logged; DEBUG is never held back.
- No resident ID, phone, plate or frame bytes in any handler's output, the count lines included.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import sys
import time
from pathlib import Path

import pytest
import yaml

from edge_agent.agent import logsetup
from edge_agent.privacy.logfilter import RepeatFilter, ScrubFilter
from support.agent import cli, start_agent, stop_agent, wait_until
from support.keys import init_keys

ID, PHONE, PLATE = "11010519491231002X", "13812341234", "苏D40000"
FRAME_HEX = "01031c3131303130353139343931323331303032"


@pytest.fixture
def root_logging():
    """Undo ``logsetup.setup`` on the root logger after the test."""
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in before:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def limited(window_s: float = 60.0, clock=None, timer: bool = False) -> tuple[logging.Logger, io.StringIO, RepeatFilter]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    repeats = RepeatFilter(window_s, clock=clock or time.monotonic, timer=timer)
    handler.addFilter(ScrubFilter())
    handler.addFilter(repeats)
    logger = logging.getLogger(f"test.repeats.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    return logger, stream, repeats


# --- journald -------------------------------------------------------------------------------

def test_journal_formatter_prefixes_every_line_with_its_priority() -> None:
    formatter = logsetup.JournalFormatter()

    def line(level: int, msg: str, exc_info=None) -> str:
        return formatter.format(logging.LogRecord("edge_agent.poll", level, __file__, 1, msg, None, exc_info))

    assert line(logging.ERROR, "device m-1: no answer") == "<3>edge_agent.poll: device m-1: no answer"
    assert line(logging.WARNING, "w").startswith("<4>") and line(logging.INFO, "i").startswith("<6>")
    assert line(logging.DEBUG, "d").startswith("<7>") and line(logging.CRITICAL, "c").startswith("<2>")
    try:
        raise ValueError("boom")
    except ValueError:
        text = line(logging.ERROR, "failed", sys.exc_info())
    assert len(text.splitlines()) > 3 and all(t.startswith("<3>") for t in text.splitlines())  # the traceback too


def test_journald_is_detected_by_the_stream_not_by_the_variable_alone(tmp_path) -> None:
    with (tmp_path / "err").open("w") as stream, (tmp_path / "other").open("w") as other:
        st, ot = os.fstat(stream.fileno()), os.fstat(other.fileno())
        assert logsetup.under_journald(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not logsetup.under_journald(stream, {"JOURNAL_STREAM": f"{ot.st_dev}:{ot.st_ino}"})
        assert not logsetup.under_journald(stream, {})
        assert not logsetup.under_journald(stream, {"JOURNAL_STREAM": "yes"})
    assert not logsetup.under_journald(io.StringIO(), {"JOURNAL_STREAM": "1:2"})  # no descriptor at all


def agent_config(tmp_path: Path) -> Path:
    cfg = {
        "gateway": {"id": "gw-log", "site": "s", "state_dir": str(tmp_path / "state")},
        "mqtt": {"host": "127.0.0.1", "port": 1, "reconnect_min": "200ms", "reconnect_max": "1s"},
        "buses": [], "devices": [],
    }
    path = tmp_path / "gw.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    init_keys(path)
    return path


def run_briefly(cfg: Path, log: Path, *args: str, env: dict | None = None) -> str:
    agent = start_agent(cfg, log, *args, env=env)
    try:
        wait_until(lambda: "cannot connect" in log.read_text() or agent.poll() is not None, 20,
                   "the uplink's first failure")
        assert agent.poll() is None, log.read_text()
    finally:
        stop_agent(agent, log)
    return log.read_text()


def test_under_journald_the_agent_writes_priorities_and_no_timestamps(tmp_path) -> None:
    cfg = agent_config(tmp_path)
    log = tmp_path / "journal.log"
    log.touch()
    st = log.stat()
    text = run_briefly(cfg, log, env={"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
    lines = text.splitlines()
    assert lines and all(line[:3] in ("<2>", "<3>", "<4>", "<6>", "<7>") for line in lines), text
    assert any(line.startswith("<6>edge_agent: edge-agent ") and " started: gateway gw-log" in line for line in lines)
    assert any(line.startswith("<3>") and "cannot connect" in line for line in lines), text
    assert not any(line[3:7].isdigit() for line in lines)  # no "2026-..." of ours


def test_off_journald_lines_carry_timestamps_and_level_names(tmp_path) -> None:
    cfg = agent_config(tmp_path)
    log = tmp_path / "plain.log"
    text = run_briefly(cfg, log, env={"JOURNAL_STREAM": "1:2"})  # inherited, but stderr is a file
    first = text.splitlines()[0]
    assert first[:4].isdigit() and first[4] == "-" and " INFO edge_agent" in text, text
    assert " ERROR " in text and "<3>" not in text


# --- the file ---------------------------------------------------------------------------------

def test_run_log_file_gets_the_log_with_mode_0640(tmp_path) -> None:
    cfg = agent_config(tmp_path)
    log_file = tmp_path / "logs" / "edge-agent.log"
    log_file.parent.mkdir()
    old = os.umask(0o002)  # a permissive umask must not widen the file
    try:
        run_briefly(cfg, tmp_path / "stderr.log", "--log-file", str(log_file), "--log-max", "1MiB", "--log-keep", "2")
    finally:
        os.umask(old)
    text = log_file.read_text()
    assert " INFO edge_agent: edge-agent " in text and "cannot connect" in text
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o640


def test_bad_log_options_are_refused_in_one_line(tmp_path) -> None:
    cfg = agent_config(tmp_path)
    out = cli("run", "-c", str(cfg), "--log-max", "10")
    assert out.returncode == 2 and "has no size unit" in out.stderr
    out = cli("run", "-c", str(cfg), "--log-keep", "0")
    assert out.returncode == 2 and "from 1 to 100" in out.stderr
    out = cli("run", "-c", str(cfg), "--log-file", str(tmp_path / "absent-dir" / "x.log"), timeout=30)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("edge-agent: --log-file ")


def test_the_file_rotates_at_the_cap_and_keeps_n_files(tmp_path, root_logging) -> None:
    path = tmp_path / "agent.log"
    (tmp_path / "agent.log.1").write_text("old\n")
    os.chmod(tmp_path / "agent.log.1", 0o644)
    path.write_text("from before\n")
    os.chmod(path, 0o644)  # an older, looser file is tightened
    logsetup.setup("info", log_file=path, max_bytes=4096, keep=2, stream=io.StringIO(), env={})
    log = logging.getLogger("edge_agent.test.rotation")
    for i in range(400):
        log.info("line %04d of a log that outgrows its cap %s", i, "x" * 40)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["agent.log", "agent.log.1", "agent.log.2"], files
    for name in files:
        size = (tmp_path / name).stat().st_size
        assert 0 < size <= 4096, (name, size)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert stat.S_IMODE((tmp_path / "agent.log.2").stat().st_mode) == 0o640  # made by us, rotated
    assert "line 0399" in path.read_text()  # the newest in the live file
    total = sum((tmp_path / n).stat().st_size for n in files)
    assert total <= 3 * 4096  # (keep + 1) x max_bytes at most


# --- repeats ---------------------------------------------------------------------------------

def test_identical_errors_pass_once_then_as_a_count_per_window() -> None:
    clock = Clock()
    log, stream, repeats = limited(clock=clock)
    for _ in range(100):
        log.error("uplink: broker %s refused the connection", "b1")
    log.error("uplink: broker %s refused the connection", "b2")  # another message: its own first
    log.warning("uplink: broker %s refused the connection", "b1")  # another level: its own first
    for _ in range(5):
        log.debug("poll overran")  # DEBUG is never held back
    assert stream.getvalue().splitlines() == [
        "ERROR uplink: broker b1 refused the connection",
        "ERROR uplink: broker b2 refused the connection",
        "WARNING uplink: broker b1 refused the connection",
    ] + ["DEBUG poll overran"] * 5
    clock.now += 60
    repeats.flush()
    assert stream.getvalue().splitlines()[8:] == [
        "ERROR uplink: broker b1 refused the connection (repeated 99 times in the last 60 s)"]
    for _ in range(3):  # still failing: counted in the new window
        log.error("uplink: broker %s refused the connection", "b1")
    clock.now += 30
    repeats.flush()  # the window is not over
    assert len(stream.getvalue().splitlines()) == 9
    clock.now += 30
    repeats.flush()
    assert stream.getvalue().splitlines()[9:] == [
        "ERROR uplink: broker b1 refused the connection (repeated 3 times in the last 60 s)"]
    clock.now += 60
    repeats.flush()  # a window with no repeats ends silently, and the next one is a first again
    log.error("uplink: broker %s refused the connection", "b1")
    assert stream.getvalue().splitlines()[10:] == ["ERROR uplink: broker b1 refused the connection"]


def test_the_count_comes_when_the_window_ends_with_nothing_else_logged() -> None:
    log, stream, _ = limited(window_s=0.3, timer=True)
    for _ in range(4):
        log.error("device m-1: decode failed")
    assert stream.getvalue().count("\n") == 1
    wait_until(lambda: "repeated 3 times in the last 0.3 s" in stream.getvalue(), 5, "the count line")


def test_one_limiter_shared_by_two_handlers_decides_once_per_record(root_logging) -> None:
    out, err = io.StringIO(), io.StringIO()
    (ours,) = logsetup.setup("info", stream=out, env={})
    extra = logging.StreamHandler(err)
    extra.addFilter(ours.filters[1])  # the same RepeatFilter
    logging.getLogger().addHandler(extra)
    log = logging.getLogger("edge_agent.test.shared")
    for _ in range(3):
        log.error("the same thing")
    assert out.getvalue().count("the same thing") == 1 and err.getvalue().count("the same thing") == 1


# --- scrubbing in every handler ----------------------------------------------------------------

def test_personal_data_is_scrubbed_in_every_handler_and_in_the_counts(tmp_path, root_logging) -> None:
    console = io.StringIO()
    foreign = io.StringIO()
    logging.getLogger().addHandler(logging.StreamHandler(foreign))  # someone else's handler on the root
    path = tmp_path / "agent.log"
    logsetup.setup("debug", log_file=path, max_bytes=1 << 20, keep=1, stream=console, env={}, repeat_window_s=0.3)
    log = logging.getLogger("edge_agent.drivers.buggy")
    log.debug("wearer %s phone %s plate %s", ID, PHONE, PLATE)
    for _ in range(3):
        log.error("bad frame %s from %s", FRAME_HEX, ID)
    try:
        raise ValueError(f"frame {FRAME_HEX} of {PHONE}")
    except ValueError:
        log.exception("decode failed")
    count_line = "bad frame <bytes> from <id> (repeated 2 times in the last 0.3 s)"
    wait_until(lambda: count_line in console.getvalue(), 5, "the count line")  # the limiter's own thread
    for h in logging.getLogger().handlers:
        h.flush()
    outputs = {"console": console.getvalue(), "file": path.read_text(), "foreign": foreign.getvalue()}
    for name, text in outputs.items():
        for raw in (ID, PHONE, PLATE, FRAME_HEX):
            assert raw not in text, (name, raw, text)
        assert "wearer <id> phone <phone> plate <plate>" in text, (name, text)
        assert "ValueError: frame <bytes> of <phone>" in text, (name, text)
    assert count_line in outputs["file"] and count_line in outputs["foreign"]
    assert all(any(isinstance(f, ScrubFilter) for f in h.filters) for h in logging.getLogger().handlers)
