"""Credential plane providers: how the operator authenticates once there."""
