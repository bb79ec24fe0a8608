"""``edge-agent platform watch`` and ``platform send`` (issue 16): follow every gateway's delivery
and state, and command them, through a broker.

``broker`` is the one module here that speaks MQTT (paho); ``cli`` holds the two verbs. What they
judge with (the tracker, signing and checking commands, decoding payloads) is the platform's API,
``edge_agent.platform``, which a platform's own consumer uses without this room. None of it runs on
a gateway.
"""
