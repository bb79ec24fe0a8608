"""``python -m edge_agent.platform unseal|keygen`` (edge_agent/platform/unseal.py)."""

import sys

from .unseal import main

sys.exit(main())
