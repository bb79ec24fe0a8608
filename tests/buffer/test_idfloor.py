"""The id floor beside the buffer (``buffer/idfloor.py``) on real files: the sidecar ``<db>.ids``,
its second copy ``{state_dir}/id-floor``, the boot id that decides whether a database is
trusted, the writer lock, and the journals kept for quarantine.

``IdFloor`` is driven here the way ``Buffer`` drives it (``load`` with what the database
remembers, ``reserve`` before a commit, ``next_id`` set after it, ``lower`` at a clean close).
Whole-buffer stories (a deleted database, a kill -9, a quarantine) are in ``test_outbox.py``
and ``test_limits.py``; the one below that needs a real database is a bug found here.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from edge_agent.buffer.idfloor import ID_FLOOR_COPY, IdFloor, boot_id, drop_kept, keep_journals, move_aside
from edge_agent.buffer.outbox import Buffer
from edge_agent.model import Reading

OTHER_BOOT = "00000000-0000-0000-0000-000000000000"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "buffer.db"


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    (tmp_path / "state").mkdir()
    return tmp_path / "state" / ID_FLOOR_COPY


def sidecar(db: Path) -> Path:
    return Path(f"{db}.ids")


def floor_file(path: Path) -> tuple[int, str]:
    fields = path.read_text(encoding="ascii").split()
    return int(fields[0]), fields[1]


def used(floor: IdFloor, n: int) -> list[int]:
    """Hand out ``n`` ids as the buffer does: reserve first, then move ``next_id`` on."""
    first = floor.next_id
    floor.reserve(first + n)
    floor.next_id = first + n
    return list(range(first, first + n))


# -- the boot id ------------------------------------------------------------------------------
def test_boot_id_is_the_kernels_id_of_this_boot() -> None:
    expected = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert boot_id() == expected == boot_id()
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", expected)


# -- reserving ahead --------------------------------------------------------------------------
def test_the_first_ids_reserve_a_block_in_the_sidecar_before_they_are_used(db: Path) -> None:
    floor = IdFloor(db, block=100)
    assert floor.load() == 1 and floor.max_id == 0
    assert not sidecar(db).exists()
    assert floor.reserve(1 + 5) == 106  # ids 1..5 wanted: the sidecar covers up to 105
    assert floor_file(sidecar(db)) == (106, boot_id())
    assert sidecar(db).read_text() == f"106 {boot_id()}\n"  # one line: ceiling and boot id


def test_ids_inside_the_block_write_nothing_and_the_next_block_starts_past_the_end(db: Path) -> None:
    floor = IdFloor(db, block=100)
    floor.load()
    used(floor, 5)
    written = sidecar(db).stat().st_mtime_ns
    assert floor.reserve(106) is None and floor.ceiling == 106  # still covered
    assert sidecar(db).stat().st_mtime_ns == written
    assert floor.reserve(107) == 207 and floor_file(sidecar(db))[0] == 207


def test_a_block_below_one_is_one(db: Path) -> None:
    floor = IdFloor(db, block=0)
    floor.load()
    assert floor.reserve(2) == 3


def test_the_sidecar_is_replaced_whole_never_left_half_written(db: Path, copy: Path) -> None:
    floor = IdFloor(db, block=10, copy_path=copy)
    floor.load()
    for _ in range(20):
        used(floor, 7)
    assert floor_file(sidecar(db)) == floor_file(copy) == (floor.ceiling, boot_id())
    assert not list(db.parent.rglob("*.tmp"))  # written beside, renamed over


def test_a_failed_write_leaves_the_ceiling_as_it_was_and_can_be_retried(db: Path, tmp_path: Path) -> None:
    """The buffer refuses the append (no id above the old ceiling is used) and tries again later."""
    gone = tmp_path / "gone" / ID_FLOOR_COPY  # its folder does not exist: the copy cannot be written
    floor = IdFloor(db, block=100, copy_path=gone)
    floor.load()
    with pytest.raises(OSError):
        floor.reserve(5)
    assert floor.ceiling == 1 and floor.next_id == 1
    gone.parent.mkdir()
    assert floor.reserve(5) == 105 and floor_file(gone)[0] == 105


def test_max_id_is_the_last_id_handed_out(db: Path) -> None:
    floor = IdFloor(db)
    floor.load()
    assert used(floor, 3) == [1, 2, 3] and floor.max_id == 3


# -- never lower --------------------------------------------------------------------------------
def test_a_clean_close_lowers_the_ceiling_to_the_next_id_so_a_restart_has_no_gap(db: Path, copy: Path) -> None:
    floor = IdFloor(db, block=1000, copy_path=copy)
    floor.load()
    ids = used(floor, 42)
    floor.lower()
    assert floor_file(sidecar(db)) == floor_file(copy) == (43, boot_id())
    again = IdFloor(db, block=1000, copy_path=copy)
    assert again.load(43, trust_floors=True) == 43  # the database's own next id agrees
    assert used(again, 1) == [max(ids) + 1]


@pytest.mark.parametrize("highest", ["sidecar", "copy", "database rows", "database meta", "ceiling copy in meta"])
def test_an_untrusted_load_starts_above_every_floor_it_knows(db: Path, copy: Path, highest: str) -> None:
    """Whichever remembers the most (sidecar, its copy, the rows' max id + 1, meta's next id, meta's
    copy of the ceiling), ids continue above it."""
    values = dict.fromkeys(["sidecar", "copy", "database rows", "database meta", "ceiling copy in meta"], 50)
    values[highest] = 900
    sidecar(db).write_text(f"{values['sidecar']} {OTHER_BOOT}\n")
    copy.write_text(f"{values['copy']} {OTHER_BOOT}\n")
    floor = IdFloor(db, copy_path=copy)
    got = floor.load(values["database rows"], values["database meta"], ceiling_copy=values["ceiling copy in meta"])
    assert got == 900 and floor.next_id == 900 and floor.ceiling == 900


def test_the_ids_survive_a_deleted_database_and_a_deleted_sidecar(db: Path, copy: Path) -> None:
    """A new database file knows nothing (floors of 1); the sidecar, or else its copy, does."""
    floor = IdFloor(db, block=100, copy_path=copy)
    floor.load()
    old = used(floor, 30)  # then a crash: no lower(), the block's rest is unused
    fresh = IdFloor(db, block=100, copy_path=copy)
    assert fresh.load(1, 1) == 131 > max(old)  # not trusted: the block's rest is skipped
    sidecar(db).unlink()  # rm buffer.db*
    assert IdFloor(db, block=100, copy_path=copy).load(1, 1) == 131
    moved = IdFloor(db.parent / "elsewhere.db", block=100, copy_path=copy)  # buffer.path changed
    assert moved.load(1, 1) == 131


def test_the_higher_of_the_sidecar_and_its_copy_counts(db: Path, copy: Path) -> None:
    sidecar(db).write_text(f"700 {OTHER_BOOT}\n")
    copy.write_text(f"300 {boot_id()}\n")
    floor = IdFloor(db, copy_path=copy)
    assert floor.read() == 700 and floor.sidecar_boot == OTHER_BOOT  # the boot id of the higher one
    copy.write_text(f"800 {boot_id()}\n")
    assert floor.read() == 800 and floor.sidecar_boot == boot_id()


def test_without_a_copy_path_only_the_sidecar_is_written(db: Path, tmp_path: Path) -> None:
    floor = IdFloor(db, block=10)
    floor.load()
    used(floor, 3)
    floor.lower()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["buffer.db.ids"]


def test_a_copy_path_that_is_the_sidecar_itself_is_one_file(db: Path) -> None:
    floor = IdFloor(db, block=10, copy_path=sidecar(db))
    floor.load()
    used(floor, 3)
    assert floor_file(sidecar(db))[0] == 14 and floor.read() == 14


# -- the boot id decides whether the database is trusted -------------------------------------
def test_same_boot_a_trusted_database_uses_on_the_rest_of_its_block(db: Path, copy: Path) -> None:
    """A kill -9 loses no commit (the WAL is in the page cache): the database's next id is exact."""
    floor = IdFloor(db, block=100, copy_path=copy)
    floor.load()
    ids = used(floor, 30)  # killed here: the sidecar says 131
    restarted = IdFloor(db, block=100, copy_path=copy)
    assert restarted.load(max(ids) + 1, trust_floors=True) == 31
    assert restarted.ceiling == 131  # that block is already reserved: no write for the next 100
    assert restarted.reserve(131) is None


@pytest.mark.parametrize("written_under", [OTHER_BOOT, None], ids=["another boot", "no boot id"])
def test_after_a_reboot_the_rest_of_the_block_is_skipped_even_for_a_trusted_database(
        db: Path, written_under: str | None) -> None:
    """A power cut may have lost commits that were already published: their ids must not return.
    A sidecar without a boot id (written before boot ids were recorded) is never trusted either."""
    sidecar(db).write_text(f"131 {written_under}\n" if written_under else "131\n")
    floor = IdFloor(db)
    assert floor.load(31, trust_floors=True) == 131 and floor.ceiling == 131


def test_the_next_write_records_this_boot(db: Path) -> None:
    sidecar(db).write_text(f"131 {OTHER_BOOT}\n")
    floor = IdFloor(db, block=10)
    floor.load(31, trust_floors=True)
    used(floor, 1)
    assert floor_file(sidecar(db)) == (142, boot_id())


# -- a damaged sidecar ------------------------------------------------------------------------
@pytest.mark.parametrize("content", [b"", b"\n", b"garbage\n", b"12x " + b"\x00" * 8, b"\xff\xfe1\n"],
                         ids=["empty", "blank line", "words", "binary", "not ascii"])
def test_an_unreadable_sidecar_is_logged_and_the_copy_and_the_database_still_count(
        db: Path, copy: Path, content: bytes, caplog: pytest.LogCaptureFixture) -> None:
    sidecar(db).write_bytes(content)
    copy.write_text(f"500 {OTHER_BOOT}\n")
    floor = IdFloor(db, copy_path=copy)
    with caplog.at_level(logging.ERROR, logger="edge_agent"):
        assert floor.load(40, 40, ceiling_copy=60) == 500
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert record.getMessage().startswith(f"{sidecar(db)}: unreadable id floor (")
    assert record.getMessage().endswith("; ids continue from the other copies")
    used(floor, 1)
    assert floor_file(sidecar(db)) == (501 + floor.block, boot_id())  # rewritten sound


def test_with_both_files_damaged_the_databases_own_copy_of_the_ceiling_counts(
        db: Path, copy: Path, caplog: pytest.LogCaptureFixture) -> None:
    sidecar(db).write_text("-\n")
    copy.mkdir()  # not even a file
    floor = IdFloor(db, copy_path=copy)
    with caplog.at_level(logging.ERROR, logger="edge_agent"):
        assert floor.load(40, 41, ceiling_copy=10_041) == 10_041
    assert len([r for r in caplog.records if "unreadable id floor" in r.getMessage()]) == 2


def test_a_short_sidecar_with_only_the_ceiling_still_counts(db: Path) -> None:
    sidecar(db).write_text("777")
    floor = IdFloor(db)
    assert floor.read() == 777 and floor.sidecar_boot == ""
    assert floor.load(5, trust_floors=True) == 777  # no boot id: not trusted


# -- the second copy across databases (a real buffer) ----------------------------------------
def readings(n: int) -> list[Reading]:
    return [Reading("river-1", "level_m", k / 100, 1_732_380_000_000 + k) for k in range(n)]


def test_going_back_to_an_older_buffer_file_does_not_bring_ids_back(tmp_path: Path, copy: Path) -> None:
    """buffer.path edited to a new file and later back (or an older buffer.db copied back), with
    restarts but no reboot: ids are never reused (contract section 4), whatever file holds them."""
    with Buffer(tmp_path / "b.db", id_floor_copy=copy) as buf:
        first = buf.append(readings(3))
    with Buffer(tmp_path / "a.db", id_floor_copy=copy) as buf:
        second = buf.append(readings(10))
    assert min(second) > max(first)
    with Buffer(tmp_path / "b.db", id_floor_copy=copy) as buf:
        third = buf.append(readings(2))
    assert min(third) > max(second), f"ids {third} were already used by a.db ({second})"
    assert floor_file(copy)[0] > max(second)


# -- the writer lock --------------------------------------------------------------------------
def test_one_writer_at_a_time_and_the_lock_is_free_again_after_release(db: Path) -> None:
    first, second = IdFloor(db), IdFloor(db)
    first.acquire()
    first.acquire()  # taken already: nothing more happens
    with pytest.raises(BlockingIOError):
        second.acquire()
    first.release()
    first.release()  # harmless twice
    second.acquire()
    second.release()
    assert Path(f"{db}.lock").exists()  # the lock file stays; only the flock comes and goes


def test_the_lock_dies_with_the_process_that_held_it(db: Path) -> None:
    code = ("import sys, time\nfrom edge_agent.buffer.idfloor import IdFloor\n"
            "IdFloor(sys.argv[1]).acquire()\nprint('held', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        floor = IdFloor(db)
        with pytest.raises(BlockingIOError):
            floor.acquire()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()
    floor.acquire()  # no stale lock to clear by hand
    floor.release()


# -- the journals kept for quarantine ---------------------------------------------------------
def journals(db: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(db.parent.iterdir()) if p.name != db.name}


def test_keep_journals_links_the_wal_and_shm_aside_and_drop_kept_forgets_them(db: Path) -> None:
    db.write_bytes(b"db")
    Path(f"{db}-wal").write_bytes(b"wal")
    Path(f"{db}-shm").write_bytes(b"shm")
    keep_journals(db)
    kept = Path(f"{db}.keep-wal")
    assert kept.read_bytes() == b"wal" and os.path.samefile(kept, f"{db}-wal")  # a second name, not a copy
    assert Path(f"{db}.keep-shm").exists()
    Path(f"{db}-wal").unlink()  # as SQLite does when it closes
    assert kept.read_bytes() == b"wal"  # the committed rows in the WAL outlive that
    drop_kept(db)
    drop_kept(db)  # nothing left to drop: no error
    assert journals(db) == {"buffer.db-shm": b"shm"}


def test_without_journals_keep_journals_links_nothing(db: Path) -> None:
    db.write_bytes(b"db")
    keep_journals(db)
    assert journals(db) == {}


def test_a_kept_wal_left_by_a_crash_is_put_back_when_the_wal_is_gone(db: Path) -> None:
    db.write_bytes(b"db")
    Path(f"{db}.keep-wal").write_bytes(b"rows")  # the agent died between link and drop
    keep_journals(db)
    assert Path(f"{db}-wal").read_bytes() == b"rows"
    assert os.path.samefile(f"{db}-wal", f"{db}.keep-wal")  # and kept again for this open


def test_a_kept_wal_left_by_a_crash_is_dropped_when_a_wal_exists(db: Path) -> None:
    db.write_bytes(b"db")
    Path(f"{db}-wal").write_bytes(b"new")
    Path(f"{db}.keep-wal").write_bytes(b"old")
    keep_journals(db)
    assert Path(f"{db}-wal").read_bytes() == Path(f"{db}.keep-wal").read_bytes() == b"new"


def test_move_aside_renames_the_database_and_its_journals_under_one_name(db: Path) -> None:
    db.write_bytes(b"db")
    Path(f"{db}-wal").write_bytes(b"wal")
    Path(f"{db}-shm").write_bytes(b"shm")
    keep_journals(db)
    aside = move_aside(db, "20250101T000000Z")
    assert aside == f"{db}.corrupt-20250101T000000Z"
    assert journals(db) == {"buffer.db.corrupt-20250101T000000Z": b"db",
                            "buffer.db.corrupt-20250101T000000Z-shm": b"shm",
                            "buffer.db.corrupt-20250101T000000Z-wal": b"wal"}
    assert not db.exists()


def test_move_aside_keeps_a_wal_written_after_the_link_under_its_own_name(db: Path) -> None:
    """SQLite deleted the kept WAL's live name and began another: both are kept, neither is paired
    with a fresh database."""
    db.write_bytes(b"db")
    Path(f"{db}-wal").write_bytes(b"first")
    keep_journals(db)
    Path(f"{db}-wal").unlink()
    Path(f"{db}-wal").write_bytes(b"later")
    aside = move_aside(db, "S")
    assert Path(f"{aside}-wal").read_bytes() == b"first"
    assert Path(f"{aside}.later-wal").read_bytes() == b"later"
    assert not Path(f"{db}-wal").exists() and not Path(f"{db}.keep-wal").exists()


def test_move_aside_never_overwrites_any_earlier_quarantine(db: Path) -> None:
    """A name is taken when any of its files exists, the journals' names included."""
    Path(f"{db}.corrupt-S-wal").write_bytes(b"earlier wal")  # only the WAL of an earlier one is left
    db.write_bytes(b"db")
    assert move_aside(db, "S") == f"{db}.corrupt-S.1"
    db.write_bytes(b"db 2")
    assert move_aside(db, "S") == f"{db}.corrupt-S.2"
    assert Path(f"{db}.corrupt-S-wal").read_bytes() == b"earlier wal"
    assert Path(f"{db}.corrupt-S.1").read_bytes() == b"db"
    assert Path(f"{db}.corrupt-S.2").read_bytes() == b"db 2"


def test_move_aside_of_journals_alone(db: Path) -> None:
    """The database file itself already gone: the journals still go aside, never to be paired with
    a new database of the same name."""
    Path(f"{db}-wal").write_bytes(b"wal")
    aside = move_aside(db, "S")
    assert journals(db) == {"buffer.db.corrupt-S-wal": b"wal"} and aside == f"{db}.corrupt-S"
