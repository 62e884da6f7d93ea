"""The run list's table redraws only the rows whose cells changed (RunTable.set_cells), and what it
draws is what was set: a live sweep changes every run's row a few times a second."""

from __future__ import annotations

import pytest
from rich.text import Text
from textual.app import App
from textual.widgets.data_table import ColumnKey

from weighttui.tui.screens.runs_list import RunTable

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

RUNS = [f"run{i}" for i in range(6)]


class TableApp(App):
    def compose(self):
        table = RunTable(id="t", cursor_type="row", zebra_stripes=True)
        table.add_column("run", key="run")
        table.add_column("last step", key="last_step")
        table.add_column("loss", key="loss")
        for i, run in enumerate(RUNS):
            table.add_row(Text(run), Text(str(100 + i), justify="right"), Text(f"{1.5 - i / 10:.3f}"), key=run)
        yield table


def lines(table: RunTable) -> list[str]:
    return [table.render_line(y).text for y in range(len(RUNS) + 1)]


def cached_rows(table: RunTable) -> set[str]:
    return {key[0].value for key in table._cell_render_cache.keys()}


async def test_set_cells_redraws_only_the_changed_rows():
    app = TableApp()
    async with app.run_test(size=(60, 12)) as pilot:
        table = app.query_one(RunTable)
        await pilot.pause()
        before = lines(table)
        assert "run2" in before[3] and "102" in before[3]
        assert set(RUNS) <= cached_rows(table)

        table.set_cells([("run2", "last_step", Text("777", justify="right"), False),
                         ("run4", "loss", Text("0.123"), False)])
        assert {"run2", "run4"}.isdisjoint(cached_rows(table))  # dropped: drawn again
        assert {"run0", "run1", "run3", "run5"} <= cached_rows(table)  # kept: not drawn again
        await pilot.pause()
        after = lines(table)
        assert "777" in after[3] and "102" not in after[3]
        assert "0.123" in after[5] and "1.100" not in after[5]
        for y in (0, 1, 2, 4, 6):  # the header and the other rows: as they were
            assert after[y] == before[y]
        assert table.get_cell("run2", "last_step").plain == "777"

        # the cursor moved onto a changed row and off again: drawn with the new value both ways
        await pilot.press("down", "down")
        assert "777" in lines(table)[3]
        table.set_cells([("run2", "last_step", Text("778", justify="right"), False)])
        await pilot.pause()
        assert "778" in lines(table)[3]

        # a wider cell widens its column: every row drawn again for the new width
        table.set_cells([("run1", "run", Text("a-much-longer-run-name"), True)])
        await pilot.pause()
        assert "a-much-longer-run-name" in lines(table)[2]
        assert table.columns[ColumnKey("run")].content_width >= len("a-much-longer-run-name")
