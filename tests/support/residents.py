"""Synthetic residents for the tests: a re-export of ``edge_agent.sim.residents`` (one copy,
which the shipped simulators also use)."""

from edge_agent.sim.residents import *  # noqa: F401,F403
from edge_agent.sim.residents import __all__  # noqa: F401
