"""The platform's half of the contract, as a small Python API (docs/platform.md; issue 16). None
of it runs on a gateway, and none of it speaks MQTT: a platform brings its own consumer and feeds
this what the broker hands it.

- ``decode_payload`` reads a telemetry or events payload (JSON, or its xz stream);
- ``open_record`` / ``unseal_all`` open sealed values with the platform's private key
  (``load_private_key``; ``generate_platform_keypair`` makes the pair);
- ``Tracker`` de-duplicates on ``(gw, id)``, finds gaps and tells losses from evictions, and keeps
  each gateway's ``R/state``;
- ``new_command`` signs a command (fresh id) and ``verify_result`` checks its result.

One import does::

    from edge_agent.platform import Tracker, decode_payload, load_private_key, new_command, open_record, verify_result

``python -m edge_agent.platform unseal|keygen`` is the command-line tool (``unseal.py``).
``edge_agent.fleet`` builds ``edge-agent platform watch|send`` on top of this.
"""

from .result import Outcome, new_command, verify_result
from .track import GatewayTrack, Gap, Tracker, parse_topic
from .unseal import (XZ_MAGIC, PayloadError, SealError, decode_payload, generate_platform_keypair, load_private_key,
                     main, main_unseal, open_record, open_sealed, payload_json, unseal_all)

__all__ = ["PayloadError", "decode_payload", "payload_json", "XZ_MAGIC", "SealError", "open_sealed", "open_record",
           "unseal_all", "generate_platform_keypair", "load_private_key", "main_unseal", "main",
           "Tracker", "GatewayTrack", "Gap", "parse_topic", "Outcome", "new_command", "verify_result"]
