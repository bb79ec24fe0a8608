"""Placeholder: ``edge-agent scan``."""


def register(sub) -> None:
    """Add the ``scan`` verb to the agent's CLI (argparse subparsers)."""
