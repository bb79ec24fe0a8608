"""``python -m edge_agent.platform unseal|keygen`` (edge_agent/platform/unseal.py)."""

import sys

from .unseal import main

if __name__ == "__main__":  # module walkers (tests/test_errors.py) import it too
    sys.exit(main())
