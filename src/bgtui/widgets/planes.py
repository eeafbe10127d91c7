"""Each plane's progress while a session is set up or torn down (from a view's `planes`)."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.widgets import Static

MARKS = {"done": ("✓", "green"), "intent": ("…", "yellow"), "failed": ("✗", "red")}


def plane_lines(steps: list[dict[str, Any]]) -> Text:
    """One line per plane step: mark, action, plane/provider, artifact, and any error."""
    text = Text()
    if not steps:
        text.append("no plane steps yet", style="dim")
        return text
    for index, step in enumerate(steps):
        mark, colour = MARKS.get(str(step.get("state")), ("·", "dim"))
        if index:
            text.append("\n")
        text.append(f"{mark} ", style=colour)
        text.append(
            f"{step.get('action')} {step.get('plane')}/{step.get('provider')} "
            f"{step.get('kind')}: {step.get('name')}"
        )
        if step.get("error"):
            text.append(f"  error: {step['error']}", style="red")
        if step.get("retry_in") is not None:
            text.append(f"  attempt {step.get('attempt')}, retry in {step['retry_in']}s")
    return text


def plane_summary(steps: list[dict[str, Any]]) -> str:
    """`credential 1/1 · network 1/1` (done steps per plane)."""
    planes: dict[str, list[int]] = {}
    for step in steps:
        counts = planes.setdefault(str(step.get("plane")), [0, 0])
        counts[1] += 1
        counts[0] += step.get("state") == "done"
    return " · ".join(f"{name} {done}/{total}" for name, (done, total) in planes.items())


class PlanesView(Static):
    """The plane steps of one view."""

    DEFAULT_CSS = """
    PlanesView { height: auto; padding: 0 1; }
    """

    def show(self, steps: list[dict[str, Any]]) -> None:
        self.update(plane_lines(steps))
