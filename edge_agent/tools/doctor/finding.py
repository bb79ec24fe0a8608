"""The doctor's vocabulary, shared by the verb and its checks: a ``Finding`` and its status
(``OK``/``WARN``/``FAIL``), ``Who`` (whose access is judged) and the time limits.

It lives apart so the checks (``local``, ``broker``) need not import the verb that runs them:
the verb imports the checks, the checks import this, and nothing imports back.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

__all__ = ["Finding", "Who", "OK", "WARN", "FAIL", "SERVICE_USER", "TIMEOUT_S", "BROKER_TIMEOUT_S"]

OK, WARN, FAIL = "OK", "WARN", "FAIL"
SERVICE_USER = "edge-agent"
TIMEOUT_S = 5.0  # a local check (a port, a file, systemctl)
BROKER_TIMEOUT_S = 3.0  # each broker step: DNS, TCP, TLS, MQTT


@dataclass(frozen=True)
class Finding:
    """One printed line: ``STATUS  check: finding`` (+ ``-> fix: ...`` on WARN/FAIL)."""

    status: str
    check: str
    finding: str
    fix: str | None = None
    details: tuple[str, ...] = ()  # further lines (the config's problems)


@dataclass(frozen=True)
class Who:
    """The user whose access is judged. ``current``: the user running doctor (real opens and
    ``os.access`` answer); otherwise mode bits, owner and ``gids`` decide, the directories on
    the way included (ACLs are not read)."""

    name: str
    uid: int
    gids: frozenset[int] = field(default_factory=frozenset)
    current: bool = True

    def may(self, path: str | os.PathLike[str], want: int) -> bool:
        """Whether this user may access ``path`` with ``want`` (``os.R_OK|os.W_OK``...)."""
        if self.current:
            return os.access(path, want, effective_ids=os.access in os.supports_effective_ids)
        if self.uid == 0:
            return True  # root: no mode bit stops read or write
        path = os.path.abspath(path)
        parents = [os.path.dirname(path)]
        while parents[-1] != os.path.dirname(parents[-1]):
            parents.append(os.path.dirname(parents[-1]))
        return self._bits(path, want) and all(self._bits(d, os.X_OK) for d in parents)  # every directory on the way

    def _bits(self, path: str, want: int) -> bool:
        st = os.stat(path)
        if st.st_uid == self.uid:
            bits = st.st_mode >> 6
        elif st.st_gid in self.gids:
            bits = st.st_mode >> 3
        else:
            bits = st.st_mode
        return bits & want & 7 == want
