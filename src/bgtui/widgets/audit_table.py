"""The audit log as a table that holds one screenful of entries at a time.

The table never holds the log: it shows the page it was given and, when the cursor runs off an
edge (or PageUp/PageDown, Ctrl+Home/End), asks its screen for another page with `PageWanted`.
So moving through a million entries costs one small query per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import DataTable

from bgtui.protocol.evidence import summary_line

if TYPE_CHECKING:
    from bgtui.mirror_schema import AuditRow

Cursor = Literal["first", "last", "keep"]

COLUMNS: tuple[tuple[str, int], ...] = (
    ("SEQ", 8),
    ("AT", 19),
    ("EVENT", 24),
    ("ACTOR", 10),
    ("SESSION", 26),
)
DEFAULT_PAGE = 50


def fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def row_cells(row: AuditRow, detail_width: int) -> tuple[Text, ...]:
    """The table cells of one entry (Text, so nobody's data is read as markup)."""
    return (
        Text(str(row.seq), justify="right"),
        Text(row.at.replace("T", " ").removesuffix("Z")),
        Text(fit(row.event, COLUMNS[2][1])),
        Text(fit(row.actor, COLUMNS[3][1])),
        Text(row.session or "-"),
        Text(summary_line(row.data, detail_width)),
    )


class AuditTable(DataTable[Text]):
    """Entries newest first, one page at a time; the screen answers `PageWanted`."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding(
            "pagedown",
            "page_down",
            "Next page",
            show=False,  # the row counts under the table say which way there is more
            id="audit-next-page",
            tooltip="Older entries: the next page.",
        ),
        Binding(
            "pageup",
            "page_up",
            "Prev page",
            show=False,  # the row counts under the table say which way there is more
            id="audit-prev-page",
            tooltip="Newer entries: the previous page.",
        ),
        Binding(
            "ctrl+home",
            "scroll_top",
            "Newest",
            show=False,
            id="audit-newest",
            tooltip="Jump to the newest entry.",
        ),
        Binding(
            "ctrl+end",
            "scroll_bottom",
            "Oldest",
            show=False,
            id="audit-oldest",
            tooltip="Jump to the oldest entry.",
        ),
    ]

    @dataclass
    class PageWanted(Message):
        """Show the page starting `offset` entries from the newest; place the cursor so."""

        table: AuditTable
        offset: int
        cursor: Cursor

        @property
        def control(self) -> AuditTable:
            return self.table

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.page_offset = 0
        self.total = 0
        self.rows_shown: list[AuditRow] = []
        self._fitted = 0
        self._shown_width = 0
        self._edges = (False, False)

    def on_mount(self) -> None:
        for label, width in COLUMNS:
            self.add_column(label, width=width, key=label.lower())
        self.add_column("DETAIL", width=self._detail_width(), key="detail")

    # -- what the screen asks for -----------------------------------------------------------
    @property
    def page_size(self) -> int:
        """Rows that fit without scrolling (a default until the table has been laid out)."""
        height = self.scrollable_content_region.height - (self.header_height or 1)
        return height if height > 0 else DEFAULT_PAGE

    def _detail_width(self) -> int:
        fixed = sum(width + 2 * self.cell_padding for _, width in COLUMNS)
        return max(16, self.scrollable_content_region.width - fixed - 2 * self.cell_padding - 1)

    def show_page(self, offset: int, rows: list[AuditRow], total: int, cursor: Cursor) -> None:
        """Replaces the rows with one page and places the cursor."""
        index = self.cursor_row if self.row_count else 0
        if self.size.height:
            rows = rows[: self.page_size]  # asked before the table was laid out
        self.page_offset, self.total, self.rows_shown = offset, total, rows
        self._fitted = self.page_size
        width = self._shown_width = self._detail_width()
        for column in self.columns.values():
            if column.key.value == "detail":
                column.width = width
        self.clear()
        for row in rows:
            self.add_row(*row_cells(row, width), key=str(row.seq))
        if rows:
            target = {"first": 0, "last": len(rows) - 1, "keep": min(index, len(rows) - 1)}
            self.move_cursor(row=target[cursor], animate=False)
        edges = (offset > 0, offset + len(rows) < total)
        if edges != self._edges:  # the footer redraws on every refresh: only when it changed
            self._edges = edges
            self.refresh_bindings()

    def selected_row(self) -> AuditRow | None:
        if not self.rows_shown or self.cursor_row < 0:
            return None
        return self.rows_shown[min(self.cursor_row, len(self.rows_shown) - 1)]

    def _want(self, offset: int, cursor: Cursor) -> None:
        self.post_message(self.PageWanted(self, max(0, offset), cursor))

    # -- paging at the edges ----------------------------------------------------------------
    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "page_down":
            return self.page_offset + len(self.rows_shown) < self.total or None
        if action == "page_up":
            return self.page_offset > 0 or None
        return True

    def action_page_down(self) -> None:
        if self.page_offset + len(self.rows_shown) < self.total:
            self._want(self.page_offset + self.page_size, "keep")

    def action_page_up(self) -> None:
        if self.page_offset > 0:
            self._want(self.page_offset - self.page_size, "keep")

    def action_cursor_down(self) -> None:
        at_end = self.cursor_row >= len(self.rows_shown) - 1
        if at_end and self.page_offset + len(self.rows_shown) < self.total:
            self._want(self.page_offset + 1, "last")
        else:
            super().action_cursor_down()

    def action_cursor_up(self) -> None:
        if self.cursor_row <= 0 and self.page_offset > 0:
            self._want(self.page_offset - 1, "first")
        else:
            super().action_cursor_up()

    def action_scroll_top(self) -> None:
        self._want(0, "first")

    def action_scroll_bottom(self) -> None:
        self._want(max(0, self.total - self.page_size), "last")

    def on_resize(self, event: events.Resize) -> None:
        if not self._fitted:
            return
        if self.page_size != self._fitted:
            self._want(self.page_offset, "keep")  # more or fewer rows fit now
        elif self.rows_shown and self._detail_width() != self._shown_width:
            self.show_page(self.page_offset, self.rows_shown, self.total, "keep")
