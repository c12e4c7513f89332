"""Progress bars: text without a live front end (detected), widgets with one, final state kept; durations."""
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from studykit.progress import format_duration, progress_bar, progress_mode, progress_write

ROOT = Path(__file__).resolve().parent.parent

CELL = """
import os, sys
sys.path.insert(0, {root!r})
from studykit.progress import progress_bar, progress_mode
print("MODE", progress_mode())
bar = progress_bar(total=48, desc="run", leave=False)
for _ in range(48):
    bar.update(1)
bar.close()
"""


@pytest.mark.parametrize("value,expected", [("text", "text"), ("widget", "widget"), ("off", "off"),
                                            ("auto", "text")])
def test_progress_env_override(monkeypatch, value, expected):
    monkeypatch.setenv("PROGRESS", value)
    assert progress_mode() == expected   # auto outside a kernel: text


def test_bad_progress_value_names_the_choices(monkeypatch):
    monkeypatch.setenv("PROGRESS", "fancy")
    with pytest.raises(ValueError, match="auto, text, widget, off"):
        progress_mode()


def test_text_bar_ends_at_final_state(monkeypatch, capsys):
    monkeypatch.setenv("PROGRESS", "text")
    with progress_bar(total=7, desc="x", leave=False) as bar:
        for _ in range(7):
            bar.update(1)
    out = capsys.readouterr().out
    assert "7/7" in out.rsplit("\r", 1)[-1]   # the last thing on the line is the finished bar


def test_nested_text_bars_in_a_log_have_no_cursor_moves(monkeypatch):
    import io
    monkeypatch.setenv("PROGRESS", "text")
    log = io.StringIO()
    with progress_bar(total=2, desc="grid", file=log) as outer:
        for _ in range(2):
            with progress_bar(total=3, desc="run", file=log, leave=False) as inner:
                inner.update(3)
            outer.update(1)
    text = log.getvalue()
    assert "\x1b[" not in text
    finals = [line.rsplit("\r", 1)[-1] for line in text.split("\n") if line]
    assert sum("3/3" in line for line in finals) == 2 and "2/2" in finals[-1]


def test_lines_printed_between_bars_get_their_own_line(monkeypatch):
    import io
    monkeypatch.setenv("PROGRESS", "text")
    log = io.StringIO()
    with progress_bar(total=2, desc="grid", file=log, mininterval=0) as outer:
        for i in range(2):
            progress_write(f"[task2] run {i}", file=log)
            with progress_bar(total=3, desc="run", file=log) as inner:
                inner.update(3)
            outer.update(1)
    shown = [line.rsplit("\r", 1)[-1] for line in log.getvalue().split("\n")]
    assert "[task2] run 0" in shown and "[task2] run 1" in shown   # whole lines, not glued to "grid: ..."


def test_off_disables(monkeypatch, capsys):
    monkeypatch.setenv("PROGRESS", "off")
    with progress_bar(total=3) as bar:
        bar.update(3)
    assert capsys.readouterr().out == ""


def _execute(env_progress):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL.format(root=str(ROOT)))])
    old = os.environ.pop("PROGRESS", None)
    if env_progress:
        os.environ["PROGRESS"] = env_progress
    try:
        NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    finally:
        os.environ.pop("PROGRESS", None)
        if old is not None:
            os.environ["PROGRESS"] = old
    return nb.cells[0].outputs, nb.metadata


def test_headless_execution_detected_saves_final_text_bar_and_no_widgets():
    outputs, metadata = _execute(None)   # PROGRESS unset: detected, not asked for
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "MODE text" in text
    assert "48/48" in text.rsplit("\r", 1)[-1], text[-300:]
    assert not any(o.output_type == "display_data" for o in outputs)
    assert "widgets" not in metadata


def test_live_frontend_gets_widgets():
    """A front end that allows stdin (as JupyterLab, Notebook and VS Code do) is a live one."""
    from jupyter_client.manager import start_new_kernel
    km, kc = start_new_kernel(kernel_name="python3")
    try:
        env = {k: v for k, v in os.environ.items() if k != "PROGRESS"}
        code = (f"import os; os.environ.clear(); os.environ.update({env!r})\n"
                f"import sys; sys.path.insert(0, {str(ROOT)!r})\n"
                "from studykit.progress import progress_mode; print('MODE', progress_mode())")
        seen = []
        kc.execute_interactive(code, allow_stdin=True, timeout=60,
                               output_hook=lambda m: seen.append(m["content"].get("text", "")))
        assert "MODE widget" in "".join(seen)
        seen.clear()
        kc.execute_interactive(code, allow_stdin=False, timeout=60,
                               output_hook=lambda m: seen.append(m["content"].get("text", "")))
        assert "MODE text" in "".join(seen)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


@pytest.mark.parametrize("seconds,text", [(0.4, "0.4 s"), (42, "42 s"), (89.6, "90 s"), (95, "1.6 min"),
                                          (3000, "50.0 min"), (5400, "1.50 h"), (36000, "10.00 h")])
def test_format_duration_picks_a_readable_unit(seconds, text):
    assert format_duration(seconds) == text


def test_format_duration_rejects_negative():
    with pytest.raises(ValueError):
        format_duration(-1)
