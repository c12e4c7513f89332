"""Progress bars that read well live and saved, and durations in a readable unit.

`progress_bar` gives notebook widget bars only when a live front end shows them (JupyterLab, Notebook,
VS Code); anywhere else (a terminal, a log file, nbconvert/nbclient/papermill executing a notebook headless)
it gives plain text bars that end at their final state, so a saved notebook shows "100%| 48/48", not a
frozen "0%" widget placeholder, and stores no widget models. PROGRESS=text|widget|off overrides the choice.
"""
from __future__ import annotations

import os
import sys

from tqdm.std import tqdm as text_tqdm

__all__ = ["progress_bar", "progress_write", "progress_mode", "has_live_frontend", "format_duration"]

MODES = ("auto", "text", "widget", "off")


def has_live_frontend() -> bool:
    """Whether code runs in a Jupyter kernel that a person's front end is driving: the one rule for live
    output, used by the progress bars here and by the memory explorer (`studykit.memory.widgets`).

    Headless executors (nbclient, hence nbconvert and papermill) send execute requests with
    allow_stdin=False, because nobody can answer input(); interactive front ends (JupyterLab, Notebook,
    VS Code, Colab) allow stdin. The request says it, whatever the environment variables a kernel inherits.
    """
    try:
        from IPython import get_ipython  # optional: only a notebook kernel has it
    except ImportError:
        return False
    shell = get_ipython()
    kernel = getattr(shell, "kernel", None)
    if kernel is None:   # plain IPython in a terminal, or no IPython at all
        return False
    return bool(getattr(kernel, "_allow_stdin", False))


def progress_mode() -> str:
    """"text", "widget" or "off": PROGRESS if set, else widgets only with a live front end."""
    mode = os.environ.get("PROGRESS", "auto").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"PROGRESS={mode!r} is not one of {', '.join(MODES)}")
    if mode == "auto":
        return "widget" if has_live_frontend() else "text"
    return mode


def progress_bar(*args, **kwargs):
    """A tqdm bar: widgets with a live notebook front end, text otherwise (see the module docstring).

    Text bars are kept when closed (`leave=True`): a bar that erases itself leaves a stale line in a
    saved notebook's output. They refresh at most every 5 s, so logs stay short.
    """
    mode = progress_mode()
    if mode == "off":
        kwargs["disable"] = True
    if mode == "widget":
        from tqdm.notebook import tqdm  # needs ipywidgets, loaded only where widgets are shown
    else:
        tqdm = text_tqdm
        kwargs.setdefault("mininterval", 5.0)
        kwargs.setdefault("file", sys.stdout)
        kwargs["leave"] = True
        if not _is_terminal(kwargs["file"]):
            # Nested bars move the cursor up and down (ESC[A) on a terminal; in a saved notebook or a log
            # those moves are junk. On one line each, a closed bar stays as its final line.
            kwargs.setdefault("position", 0)
    return tqdm(*args, **kwargs)


def progress_write(text: str, file=None) -> None:
    """Print a line while text bars are open, without gluing it to a bar's line (tqdm.write clears the
    bars, prints, and draws them again)."""
    text_tqdm.write(text, file=file or sys.stdout)
    (file or sys.stdout).flush()


def _is_terminal(file) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False


def format_duration(seconds: float) -> str:
    """A duration in the unit that reads best: "42 s", "3.5 min", "2.25 h"."""
    seconds = float(seconds)
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {seconds}")
    if seconds < 90:
        return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"
