"""The device agent for Linux hosts: facts, a pure state machine, and a runner that
stages, activates, relaunches, checks and rolls back supplements."""
