"""DataTable helpers the mode screens share: replace rows in place, read the selected key."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable


def widen_columns(table: DataTable[Any], rows: Sequence[Sequence[Text]]) -> None:
    """Sizes the table's auto-width columns to `rows` now, not on the table's next idle.

    DataTable measures new rows when its message queue next runs dry, and that measuring does
    not invalidate lines it already rendered: a frame painted in between (a busy machine) keeps
    the header's widths, and every cell is cut to its label ("Activ", "01") until something
    else changes the table. Measuring here, before any frame, leaves no such window.
    """
    for index, column in enumerate(table.ordered_columns):
        if not column.auto_width:
            continue
        widest = max((row[index].cell_len for row in rows if index < len(row)), default=0)
        column.content_width = max(column.content_width, widest)


def table_rows(table: DataTable[Any], rows: Sequence[tuple[str, Sequence[str]]]) -> None:
    """Replaces the rows of `table`, keeping the cursor on the same key when it still exists."""
    keep: str | None = None
    if table.row_count and table.cursor_row >= 0:
        try:
            keep = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except Exception:
            keep = None
    # Text, not str: a DataTable reads str cells as markup, and these come from others.
    cells = [[Text(cell) for cell in row] for _, row in rows]
    table.clear()
    widen_columns(table, cells)
    for (key, _), row in zip(rows, cells, strict=True):
        table.add_row(*row, key=key)
    if keep is not None:
        for index, (key, _) in enumerate(rows):
            if key == keep:
                table.move_cursor(row=index)
                break


def selected_key(table: DataTable[Any]) -> str | None:
    if not table.row_count:
        return None
    try:
        value = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
    except Exception:
        return None
    return str(value) if value is not None else None
