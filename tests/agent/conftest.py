"""Fixtures shared by the agent's end-to-end tests."""

from test_agent_end_to_end import world

__all__ = ["world"]
