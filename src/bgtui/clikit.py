"""What both command lines share: one-line refusals with exit 1, durations as a click type."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from bgtui.protocol.errors import Refused
from bgtui.protocol.timefmt import parse_duration


class RefusingGroup(click.Group):
    """A click group that turns `Refused` into `PROG: reason` on stderr and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except Refused as exc:
            click.echo(f"{ctx.find_root().info_name}: {exc}", err=True)
            sys.exit(1)
        except OSError as exc:  # a disk or permission problem nobody foresaw: still one line
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"{ctx.find_root().info_name}: {where}{exc.strerror or exc}", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo(f"{ctx.find_root().info_name}: interrupted", err=True)
            sys.exit(130)


class Duration(click.ParamType):  # type: ignore[type-arg]
    """A duration such as 90s, 15m, 2h or 1h30m, as seconds."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value))
        except Refused as exc:
            self.fail(str(exc), param, ctx)


def print_json(value: Any) -> None:
    click.echo(json.dumps(value, indent=2, sort_keys=True))
