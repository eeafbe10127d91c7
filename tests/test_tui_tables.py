"""The mode screens' tables: a frame painted before the table's idle shows whole cells.

DataTable measures new rows only when its message queue runs dry, and a line it painted before
that is cached with the header's widths. On a loaded machine the first frame can win that race
and the table then shows `Activ` and `01` until something else changes it (seen in CI, in
tests/test_tmux_connect.py). `table_rows` measures before any frame can be painted.
"""

from __future__ import annotations

import asyncio

from textual.app import App, ComposeResult
from textual.widgets import DataTable

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
