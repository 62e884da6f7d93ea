"""The header's title on a long path: cut in its middle, the file name and '(over ssh)' kept."""

from weighttui.tui.widgets.header import TITLE_CELLS, short_title


def test_long_title_keeps_its_start_and_end():
    title = "gpu-box:/home/someone/experiments/2026/sweep-17/lr-0.003/seed-4/run.wtui (over ssh)"
    shown = short_title(title)
    assert len(shown) == TITLE_CELLS and "…" in shown
    assert shown.startswith("gpu-box:") and shown.endswith("run.wtui (over ssh)")


def test_short_title_is_left_alone():
    assert short_title("run.wtui") == "run.wtui"
    assert short_title("x" * TITLE_CELLS) == "x" * TITLE_CELLS
