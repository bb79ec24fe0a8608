"""Wires the pipeline: the daemon, supervision, sd_notify, the control socket, status, logging."""
