"""The log scrubber: whatever a buggy driver logs (a value, a frame in an exception), no resident
ID, phone, plate or frame bytes reach the log, at any level. In-process on a handler, and through
``edge-agent``'s own logging set-up in a subprocess."""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import textwrap

from edge_agent.privacy.logfilter import ScrubFilter, install

ID, PHONE, PLATE = "11010519491231002X", "13812341234", "苏D40000"
FRAME = bytes.fromhex("01 03 1c 31 31 30 31 30 35 31 39 34 39 31 32 33 31 30 30 32 58 c4 0b")


def capture() -> tuple[logging.Logger, io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger = logging.getLogger(f"test.logfilter.{id(stream)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    install(logger)
    install(logger)  # idempotent: one filter per handler
    assert sum(isinstance(f, ScrubFilter) for f in handler.filters) == 1
    return logger, stream


class FrameError(Exception):
    def __init__(self, frame: bytes) -> None:
        super().__init__(f"bad checksum in frame {frame!r} ({frame.hex(' ')}) from wearer {ID}")


def test_messages_arguments_and_exceptions_are_scrubbed() -> None:
    logger, stream = capture()
    logger.debug("decoded id_no=%s phone=%r plate=%s", ID, f"+86 {PHONE}", PLATE)
    logger.info("raw frame %s", FRAME.hex())
    try:
        raise FrameError(FRAME)
    except FrameError:
        logger.exception("driver hub-1 failed")
    logger.warning("stack", stack_info=True)
    logger.error("bad %d format", ID)  # a bug in the format string must not print the raw argument
    text = stream.getvalue()
    for raw in (ID, PHONE, PLATE, FRAME.hex(), "\\x03\\x1c", "31 31 30 31"):
        assert raw not in text, (raw, text)
    assert "decoded id_no=<id> phone='<phone>' plate=<plate>" in text
    assert "raw frame <bytes>" in text
    assert "FrameError: bad checksum in frame <bytes> (<bytes>) from wearer <id>" in text
    assert "Traceback" in text and "driver hub-1 failed" in text  # the rest of the trace is kept


def test_the_cli_logging_setup_scrubs_every_record() -> None:
    code = textwrap.dedent(f"""
        import logging
        from edge_agent.cli import setup_logging
        setup_logging("debug")
        log = logging.getLogger("edge_agent.drivers.buggy")
        log.debug("wearer %s phone %s plate %s", {ID!r}, {PHONE!r}, {PLATE!r})
        try:
            raise ValueError("frame " + repr({FRAME!r}))
        except ValueError:
            log.exception("decode failed")
        logging.getLogger("paho").warning("payload %s", {FRAME.hex()!r})
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    for raw in (ID, PHONE, PLATE, FRAME.hex()):
        assert raw not in out.stderr, out.stderr
    assert "DEBUG edge_agent.drivers.buggy: wearer <id> phone <phone> plate <plate>" in out.stderr
    assert "ValueError: frame <bytes>" in out.stderr and "payload <bytes>" in out.stderr
