"""`edge-agent doctor`: the verb, its findings, local checks and broker checks (verb -> local, broker -> finding)."""
