"""bgtui: the break-glass client (CLI and TUI)."""
