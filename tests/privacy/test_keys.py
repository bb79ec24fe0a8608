"""Site key files: create, load, rotate; refusal of loose permissions, missing files and malformed
lines with messages that name the file and the fix; fingerprints that never show the key."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from edge_agent.privacy.keys import KeyFileError, KeyRing, create_site_key, fingerprint, load_keyring, rotate_site_key
from edge_agent.privacy.stage import Privacy
from edge_agent.privacy.pseudonym import pseudonymize
from edge_agent.settings import PrivacySettings


def b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def write(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def test_create_load_rotate(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "pseudonym.key"
    created = create_site_key(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert created.active == 1 and len(created.active_key) == 32
    loaded = load_keyring(path)
    assert loaded.versions == created.versions and loaded.active == 1
    before = pseudonymize("13812341234", loaded)

    rotated = rotate_site_key(path)
    assert rotated.active == 2 and rotated.key(1) == created.key(1) and rotated.key(2) != created.key(1)
    again = load_keyring(path)
    assert again.active == 2 and again.versions == rotated.versions
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pseudonymize("13812341234", again, version=1) == before  # old tokens stay reproducible
    assert pseudonymize("13812341234", again).startswith("p2:")
    assert [p.name for p in path.parent.iterdir()] == ["pseudonym.key"]  # no temp file left behind

    with pytest.raises(KeyFileError, match="already exists"):
        create_site_key(path)


def test_privacy_load_reads_the_configured_files(tmp_path: Path) -> None:
    path = tmp_path / "k"
    ring = create_site_key(path)
    p = Privacy.load(PrivacySettings(key_file=path))
    assert p.keys is not None and p.keys.versions == ring.versions and p.warnings == ()


def test_comments_blank_lines_and_highest_version_active(tmp_path: Path) -> None:
    k1, k3 = bytes(32), bytes(range(32))
    path = write(tmp_path / "k", f"# site keys\n\nv3 {b64(k3)}\n  # old\nv1 {b64(k1)}\n")
    ring = load_keyring(path)
    assert ring.active == 3 and ring.key(1) == k1 and ring.active_key == k3


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o620, 0o606, 0o700 | 0o070])
def test_loose_permissions_are_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "pseudonym.key"
    create_site_key(path)
    os.chmod(path, mode)
    with pytest.raises(KeyFileError) as info:
        load_keyring(path)
    message = str(info.value)
    assert str(path) in message and f"run: chmod 600 {path}" in message
    assert f"(mode {mode:04o})" in message and "by group or others" in message


def test_the_exact_message_for_0644(tmp_path: Path) -> None:
    path = write(tmp_path / "k", f"v1 {b64(bytes(32))}\n", 0o644)
    with pytest.raises(KeyFileError) as info:
        load_keyring(path)
    assert str(info.value) == f"key file {path} is readable by group or others (mode 0644); run: chmod 600 {path}"


def test_missing_file_says_how_to_create_it(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError) as info:
        load_keyring(tmp_path / "absent.key")
    assert str(tmp_path / "absent.key") in str(info.value) and "edge-agent keys init -c CONFIG" in str(info.value)


SECRET = b64(bytes(range(100, 132)))


@pytest.mark.parametrize("text,line,what", [
    (f"v1 {b64(bytes(32))}\nkey {SECRET}\n", 2, "expected 'v<N> <base64"),
    (f"# c\n\nv1 {SECRET[:-4]}\n", 3, "bytes, expected 32"),
    (f"v1 {SECRET}\nv1 {b64(bytes(32))}\n", 2, "appears twice (first at line 1)"),
    ("v0 " + SECRET + "\n", 1, "start at v1"),
    ("v1 not*base64\n", 1, "not valid base64"),
    (f"v1 {SECRET} trailing\n", 1, "expected"),
    (SECRET + "\n", 1, "expected"),
])
def test_malformed_lines_are_reported_with_their_number(tmp_path: Path, text: str, line: int, what: str) -> None:
    path = write(tmp_path / "k", text)
    with pytest.raises(KeyFileError) as info:
        load_keyring(path)
    message = str(info.value)
    assert f"key file {path} line {line}: " in message and what in message
    assert SECRET not in message and SECRET[:20] not in message  # never echo key material


def test_a_file_without_keys_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="holds no key line"):
        load_keyring(write(tmp_path / "k", "# nothing yet\n"))


def test_fingerprints_are_stable_and_hide_the_key() -> None:
    key = bytes(range(32))
    fp = fingerprint(key)
    assert fp == fingerprint(bytes(range(32))) and fp != fingerprint(bytes(32))
    assert fp.startswith("SHA256:") and len(fp) == 7 + 43 and "=" not in fp
    assert b64(key) not in fp and key.hex() not in fp
    ring = KeyRing({1: key, 2: bytes(32)})
    assert ring.fingerprints() == {1: fp, 2: fingerprint(bytes(32))}
    assert b64(key) not in repr(ring) and key.hex() not in repr(ring) and str(list(key)) not in repr(ring)
    assert repr(ring) == "KeyRing(active=2, versions=[1, 2])"


def test_keyring_checks_itself() -> None:
    with pytest.raises(ValueError):
        KeyRing({})
    with pytest.raises(ValueError):
        KeyRing({1: b"short"})
    with pytest.raises(ValueError):
        KeyRing({1: bytes(32)}, active=2)
