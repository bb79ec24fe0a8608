"""The platform's fleet tools (issue 16): follow every gateway's delivery and state, and command them.

``track`` is pure (feed it topics and payload bytes: a platform's own consumer can use it);
``result`` signs commands and checks their results; ``broker`` is the one module here that
speaks MQTT (paho); ``cli`` holds ``edge-agent platform watch`` and ``platform send``.
None of it runs on a gateway.
"""
