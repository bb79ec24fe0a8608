"""The process's own figures (``agent/procstat.py``) against what the kernel says elsewhere.

CPU time is checked against ``getrusage`` after burning a known amount of it (in this thread
and in another one), RSS against ``VmRSS`` in ``/proc/self/status`` and against a block of
memory the test fills, free disk space against ``statvfs`` of the nearest existing folder.
``RateMeter`` runs on a clock the test moves (its ``monotonic`` parameter), so its rates are
exact and nothing waits.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import threading
import time
from pathlib import Path

import pytest

from edge_agent.agent.procstat import RateMeter, cpu_seconds, disk_free_bytes, rss_bytes

MiB = 1024 * 1024


def rusage_seconds(who: int = resource.RUSAGE_SELF) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def burn(seconds: float, who: int = resource.RUSAGE_SELF) -> None:
    """Spin until the kernel has charged ``seconds`` more CPU to ``who`` (a count of work,
    not of wall time: on a busy machine it just takes longer)."""
    until = rusage_seconds(who) + seconds
    n = 0
    while rusage_seconds(who) < until:
        n += sum(range(2000))


def vm_rss_bytes() -> int:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB$", status, re.M).group(1)) * 1024  # type: ignore[union-attr]


# -- cpu_seconds ------------------------------------------------------------------------------
def test_cpu_seconds_grow_by_the_cpu_burnt() -> None:
    before, ref_before = cpu_seconds(), rusage_seconds()
    burn(0.3)
    grown, ref_grown = cpu_seconds() - before, rusage_seconds() - ref_before
    assert grown >= 0.3 - 0.02  # os.times counts in clock ticks (10 ms), getrusage finer
    assert grown == pytest.approx(ref_grown, abs=0.05)


def test_cpu_seconds_count_every_thread_of_the_process() -> None:
    before = cpu_seconds()
    worker = threading.Thread(target=burn, args=(0.3, resource.RUSAGE_THREAD))  # CPU charged to that thread
    worker.start()
    worker.join()
    assert cpu_seconds() - before >= 0.3 - 0.02


def test_cpu_seconds_do_not_grow_while_the_process_sleeps() -> None:
    before = cpu_seconds()
    time.sleep(0.5)
    assert 0.0 <= cpu_seconds() - before < 0.25


# -- rss_bytes --------------------------------------------------------------------------------
def test_rss_agrees_with_vm_rss_in_proc_self_status() -> None:
    rss, status = rss_bytes(), vm_rss_bytes()
    assert rss is not None and rss % os.sysconf("SC_PAGE_SIZE") == 0
    assert rss == pytest.approx(status, abs=2 * MiB)  # read a moment apart: a few pages may move


def test_rss_grows_by_memory_the_process_fills() -> None:
    before = rss_bytes()
    block = b"\x5a" * (64 * MiB)  # written, so resident (zero-filled memory may stay unmapped)
    after = rss_bytes()
    assert before is not None and after is not None
    assert after - before >= 60 * MiB
    del block


# -- disk_free_bytes --------------------------------------------------------------------------
def test_disk_free_is_what_an_unprivileged_writer_may_use(tmp_path: Path) -> None:
    """``f_bavail`` (not ``f_bfree``, which counts root's reserve); the same figure
    ``shutil.disk_usage`` gives as ``free``, up to other writers on the disk meanwhile."""
    st = os.statvfs(tmp_path)
    free = disk_free_bytes(tmp_path)
    assert free is not None and free % st.f_frsize == 0
    assert free == pytest.approx(st.f_bavail * st.f_frsize, abs=64 * MiB)
    assert free == pytest.approx(shutil.disk_usage(tmp_path).free, abs=64 * MiB)


def test_disk_free_of_a_path_not_made_yet_is_that_of_its_nearest_existing_folder(tmp_path: Path) -> None:
    """The buffer may not exist yet (nor its folder): its disk is that of the first parent found."""
    not_yet = tmp_path / "state" / "sub" / "buffer.db"
    assert disk_free_bytes(not_yet) == pytest.approx(disk_free_bytes(tmp_path), abs=64 * MiB)
    assert disk_free_bytes(str(not_yet)) is not None  # a str does as well as a Path
    assert not (tmp_path / "state").exists()  # only looked at, nothing made


def test_disk_free_follows_the_filesystem_the_path_is_on(tmp_path: Path) -> None:
    """/dev/shm (a tmpfs) and the tests' folder are different filesystems with their own figures."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.statvfs(shm).f_fsid == os.statvfs(tmp_path).f_fsid:
        pytest.skip("no separate tmpfs at /dev/shm here")
    st = os.statvfs(shm)
    assert disk_free_bytes(shm / "nothing-here" / "x.db") == pytest.approx(st.f_bavail * st.f_frsize, abs=16 * MiB)


def test_disk_free_is_none_rather_than_an_error_when_it_cannot_be_had(tmp_path: Path) -> None:
    a_file = tmp_path / "plain-file"
    a_file.write_text("x")
    assert disk_free_bytes(a_file / "buffer.db") is None  # ENOTDIR: a health figure never raises


# -- RateMeter --------------------------------------------------------------------------------
class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_no_rate_until_a_second_of_history() -> None:
    clock = Clock()
    meter = RateMeter(60.0, monotonic=clock)
    assert meter.rate(0) == (None, 0.0)
    clock.t += 0.5
    assert meter.rate(5) == (None, 0.5)
    clock.t += 0.5
    assert meter.rate(10) == (10.0, 1.0)


def test_a_steady_counter_gives_its_rate_over_the_span() -> None:
    clock = Clock()
    meter = RateMeter(60.0, monotonic=clock)
    for second in range(31):
        meter.sample(second * 25)
        clock.t += 1
    assert meter.rate(31 * 25) == (25.0, 31.0)


def test_the_rate_covers_the_last_window_only() -> None:
    """100 s at 10/s, then 60 s standing still: over a 60 s window the rate is 0, and the span
    stays about the window however long the meter has run."""
    clock = Clock()
    meter = RateMeter(60.0, monotonic=clock)
    value = 0
    for _ in range(100):
        meter.sample(value)
        clock.t += 1
        value += 10
    busy, span = meter.rate(value)
    assert busy == pytest.approx(10.0) and 60.0 <= span <= 61.0
    for _ in range(60):
        meter.sample(value)
        clock.t += 1
    idle, span = meter.rate(value)
    assert idle == 0.0 and 60.0 <= span <= 61.0


def test_calls_closer_than_min_step_do_not_move_the_start_of_the_span() -> None:
    """A status poll every 10 ms must not shorten the window: samples closer than ``min_step_s``
    are skipped, so the oldest kept sample still starts the span."""
    clock = Clock()
    meter = RateMeter(10.0, min_step_s=1.0, monotonic=clock)
    meter.sample(0)
    for i in range(1, 500):
        clock.t += 0.01
        meter.sample(i)
    assert meter.rate(500) == (pytest.approx(500 / 4.99), pytest.approx(4.99))


def test_a_counter_that_went_down_gives_zero_not_a_negative_rate() -> None:
    """A counter reset (the uplink rebuilt, say) must not show as a negative rate."""
    clock = Clock()
    meter = RateMeter(60.0, monotonic=clock)
    meter.sample(1000)
    clock.t += 5
    assert meter.rate(10) == (0.0, 5.0)


def test_on_the_real_clock_with_cpu_seconds() -> None:
    """As the daemon uses it: CPU seconds per second over the last minute, while this thread
    burns CPU: a share of one core, above 0 and not above the number of cores."""
    meter = RateMeter(60.0, min_step_s=0.0)
    meter.sample(cpu_seconds())
    start = time.monotonic()
    while time.monotonic() - start < 1.1:  # the meter reports nothing for less than 1 s of history
        burn(0.05)
    share, span = meter.rate(cpu_seconds())
    assert share is not None and span >= 1.0
    assert 0.0 < share <= (os.cpu_count() or 1) + 0.1
