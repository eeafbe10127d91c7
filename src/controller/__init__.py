"""bgctl: the break-glass controller."""
