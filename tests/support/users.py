"""Running a command as a user other than the test's: permission problems are real ones.

Tests run as root in CI, and root reads every file; ``setpriv`` drops to ``nobody`` so a file
mode of 0600 means what it means for a technician. Pytest's tmp_path sits under 0700 parents,
so such tests use ``shared_dir()``, a directory every user can enter.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

__all__ = ["as_another_user", "shared_dir", "unreadable_mode"]


def as_another_user() -> list[str]:
    """A command prefix under which a file of ours with mode 0600 is not readable."""
    if os.geteuid() != 0:
        return []  # the test makes the file 0000 for ourselves
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv to drop root")
    return ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def unreadable_mode() -> int:
    """0600 keeps a file from nobody when we are root; as anyone else, 0 keeps it from ourselves."""
    return 0o600 if os.geteuid() == 0 else 0


@contextmanager
def shared_dir(prefix: str = "edge-agent-perm-") -> Iterator[Path]:
    """A fresh directory (0755) that the other user can enter; removed afterwards."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base)
