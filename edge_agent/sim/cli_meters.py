"""Placeholder: filled in by the simulators of its family."""


def register(kinds) -> None:
    """Add this family's simulate kinds to kinds (argparse subparsers)."""
