"""Keys for tests that run the agent: ``init_keys(config)`` is ``edge-agent keys init -c config``.

The site pseudonym key is required to start (``identifier`` pseudonymizes by default), so every
test that runs ``edge-agent run`` or ``read`` creates it first, exactly as an installer would.
"""

from __future__ import annotations

from pathlib import Path

from edge_agent.cli import main

__all__ = ["init_keys"]


def init_keys(config: Path, *, rotate: bool = False) -> None:
    """Create (or with ``rotate``, add a version to) the key file that ``config`` points at."""
    args = ["keys", "init", "-c", str(config)] + (["--rotate"] if rotate else [])
    code = main(args)
    if code != 0:
        raise AssertionError(f"edge-agent {' '.join(args)} exited {code}")
