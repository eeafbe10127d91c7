"""Widgets every mode shares, in a real Textual app (headless): tables and the header.

Tables: a frame painted before the table's idle shows whole cells. DataTable measures new rows
only when its message queue runs dry, and a line it painted before that is cached with the
header's widths. On a loaded machine the first frame can win that race and the table then
shows `Activ` and `01` until something else changes it (seen in CI, in
tests/test_tmux_connect.py). `table_rows` measures before any frame can be painted.

Header: the link state is never cut; the address goes first, then the fingerprint.
"""

from __future__ import annotations

import asyncio

from textual.app import App, ComposeResult
from textual.widgets import DataTable, Label

from bgtui.widgets.header import BgHeader
from bgtui.widgets.tables import selected_key, table_rows

ROWS = [
    (
        "01JEXAMPLE0000000000000001",
        ("01JEXAMPLE0000000000000001", "Active", "bastion", "9m58s left"),
    ),
    ("01JEXAMPLE0000000000000002", ("01JEXAMPLE0000000000000002", "Ended", "orders-db", "")),
]


class OneTable(App[None]):
    def compose(self) -> ComposeResult:
        table: DataTable[str] = DataTable(id="t", cursor_type="row")
        table.add_columns("ID", "STATE", "RESOURCE", "NOTE")
        yield table


def painted(table: DataTable[str]) -> list[str]:
    """The table's first three lines as a frame paints them now (the header and two rows)."""
    return [table.render_line(y).text for y in range(3)]


def test_a_frame_painted_before_the_tables_idle_does_not_stick() -> None:
    async def run() -> None:
        app = OneTable()
        async with app.run_test(size=(100, 10)) as pilot:
            await pilot.pause()
            table = app.query_one("#t", DataTable)
            table_rows(table, ROWS)
            # No await between: a frame is painted before the table's idle has run.
            early = painted(table)
            await pilot.pause()  # now the idle has run; the frame must not keep early widths
            for lines in (early, painted(table)):
                assert "RESOURCE" in lines[0], lines
                assert "01JEXAMPLE0000000000000001" in lines[1], lines
                assert "Active" in lines[1] and "9m58s left" in lines[1], lines
                assert "orders-db" in lines[2], lines

    asyncio.run(run())


def test_rows_are_replaced_and_the_cursor_stays_on_its_key() -> None:
    async def run() -> None:
        app = OneTable()
        async with app.run_test(size=(100, 10)) as pilot:
            table = app.query_one("#t", DataTable)
            table_rows(table, ROWS)
            table.move_cursor(row=1)
            await pilot.pause()
            assert selected_key(table) == ROWS[1][0]
            # A newer list with a new row on top: the cursor follows its key, not its index.
            table_rows(table, [("01JNEW", ("01JNEW", "Requested", "bastion", "")), *ROWS])
            await pilot.pause()
            assert table.row_count == 3
            assert selected_key(table) == ROWS[1][0]
            assert selected_key(table) != "01JNEW"

    asyncio.run(run())


# -- the header ---------------------------------------------------------------------------------

FINGERPRINT = "SHA256:fB6J5ohMb0tJitsGq2kzYpV0xq9d0m1x3nq8Jd0Zl5E"
ADDRESS = "unix:/tmp/bgtui-demo-amwg_jjc/controller/bgctl.sock"


class HeaderOnly(App[None]):
    def compose(self) -> ComposeResult:
        yield BgHeader()

    def on_mount(self) -> None:
        header = self.query_one(BgHeader)
        header.who, header.role, header.fingerprint = "olive", "operator", FINGERPRINT
        header.controller, header.address, header.state = "acme-prod", ADDRESS, "connected"


def header_line(width: int) -> str:
    sides = ("identity", "link")

    async def run() -> str:
        app = HeaderOnly()
        async with app.run_test(size=(width, 3)) as pilot:
            await pilot.pause()
            identity, link = (str(app.query_one(f"#{part}", Label).content) for part in sides)
            # Both sides whole in the line: nothing is left to be cut with an ellipsis.
            assert len(identity) + len(link) + 2 <= width, (identity, link)
            return f"{identity} | {link}"

    return asyncio.run(run())


def test_the_header_drops_the_address_before_the_identity_and_never_cuts_the_link() -> None:
    wide = header_line(200)
    assert "olive · operator · SHA256:fB6J5ohMb0tJits" in wide
    assert f"acme-prod {ADDRESS}  ● connected" in wide

    middle = header_line(100)  # too narrow for both: the address goes, the fingerprint stays
    assert "olive · operator · SHA256:fB6J5ohMb0tJits" in middle
    assert "acme-prod  ● connected" in middle and "unix:" not in middle

    narrow = header_line(60)  # then the fingerprint goes, whole: no dangling separator
    assert "olive · operator " in narrow and "SHA256" not in narrow
    assert "operator ·" not in narrow
    assert narrow.endswith("| acme-prod  ● connected")
