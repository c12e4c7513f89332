"""The memory explorer in a real browser: JupyterLab + headless Debian Chromium driven by Playwright.

Needs `apt-get install -y chromium` and `pip install playwright` (never `playwright install`: we use the
system Chromium). Skips when either is missing. About 15-25 s.

A copy of memory_estimate.ipynb's parameters, setup and explorer cells goes into a temporary folder, so
JupyterLab's autosave never touches the committed notebook. We run those cells with Shift+Enter,
waiting for the kernel to read Idle before each keypress (a keypress sent while it starts is dropped),
then pick another batch size in the widget and check that the breakdown text changes.
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

pytestmark = pytest.mark.timeout(240)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _widget_notebook(dest):
    """The parameters cell, the setup cell and the explorer cell of the real notebook, outputs cleared."""
    nb = json.loads((ROOT / "memory_estimate.ipynb").read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    keep = [code[0], code[1]] + [c for c in code if "memory_explorer(" in "".join(c["source"])][:1]
    assert "parameters" in keep[0]["metadata"].get("tags", []), "first code cell must be the parameters cell"
    assert len(keep) == 3, "memory_estimate.ipynb has no memory_explorer cell"
    for c in keep:
        c["outputs"], c["execution_count"] = [], None
    # `import utils` loads the whole kit (datasets, accelerate: ~11 s on a busy 2-core box); the widget
    # needs only studykit.memory, which utils re-exports, so the copy imports that under the same name.
    setup = "".join(keep[1]["source"])
    assert "import utils" in setup
    keep[1]["source"] = setup.replace("import utils", "from studykit import memory as utils")
    nb["cells"] = keep
    dest.write_text(json.dumps(nb))
    return len(keep)


def _wait_http(url, deadline):
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"JupyterLab did not answer at {url}")


@pytest.fixture
def jupyterlab(tmp_path):
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium")
    pytest.importorskip("playwright.sync_api", reason="pip install playwright (system Chromium, no playwright install)")
    if shutil.which("jupyter") is None and not (Path(sys.executable).parent / "jupyter").exists():
        pytest.skip("jupyter not installed")
    root, cfg, settings = tmp_path / "root", tmp_path / "config", tmp_path / "settings"
    for d in (root, cfg, settings / "@jupyterlab" / "apputils-extension"):
        d.mkdir(parents=True)
    # JupyterLab's news popup covers the page; turn it and the update check off in user settings.
    (settings / "@jupyterlab" / "apputils-extension" / "notification.jupyterlab-settings").write_text(
        json.dumps({"fetchNews": "false", "checkForUpdates": False}))
    n_cells = _widget_notebook(root / "memory_widget.ipynb")
    port, token = _free_port(), "memory-widget-test"
    env = dict(os.environ, JUPYTER_CONFIG_DIR=str(cfg), JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"),
               JUPYTERLAB_SETTINGS_DIR=str(settings), JUPYTERLAB_WORKSPACES_DIR=str(tmp_path / "ws"),
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               TORCH_THREADS="1", HF_HUB_OFFLINE="1",
               MEMORY_MODEL="roberta-base")  # the parameters cell's override: a quicker first render
    log = open(tmp_path / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--ServerApp.token={token}", f"--ServerApp.root_dir={root}",
         f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp_path / 'ws'}",
         "--ServerApp.open_browser=False", "--LabApp.news_url=", "--ServerApp.port_retries=0"],
        env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", time.time() + 90)
        yield dict(url=f"http://127.0.0.1:{port}/lab/tree/memory_widget.ipynb?token={token}", n_cells=n_cells,
                   log=tmp_path / "jupyterlab.log")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def _wait_idle(page, timeout_s=60):
    """Until the notebook's kernel status reads Idle (the status bar text of JupyterLab 4)."""
    page.wait_for_function(
        """() => [...document.querySelectorAll('#jp-main-statusbar *')]
                 .some(e => e.children.length === 0 && /\\bIdle\\b/.test(e.textContent))""",
        timeout=timeout_s * 1000)


def _run_cell(page, index, timeout_s=90):
    """Select code cell `index` and press Shift+Enter until it gets an execution count (retrying)."""
    cell = page.locator(".jp-Notebook .jp-CodeCell").nth(index)
    prompt = cell.locator(".jp-InputArea-prompt")
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        _wait_idle(page, max(1, deadline - time.time()))
        cell.locator(".jp-InputArea-editor").click()
        page.keyboard.press("Escape")  # command mode: Shift+Enter runs the cell
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_function(
                "el => /\\[\\d+\\]/.test(el.textContent)", arg=prompt.element_handle(), timeout=60_000)
            return
        except Exception:  # the keypress was dropped: try again
            continue
    raise TimeoutError(f"cell {index} did not run")


def test_moving_a_control_changes_the_breakdown(jupyterlab):
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(jupyterlab["url"])
            page.locator(".jp-Notebook .jp-CodeCell").first.wait_for()
            for i in range(jupyterlab["n_cells"]):
                _run_cell(page, i)
            summary = page.locator(".memory-summary")
            summary.wait_for(timeout=90_000)
            page.wait_for_function(
                "() => /Full fine-tuning/.test(document.querySelector('.memory-summary').textContent)")
            before = summary.inner_text()
            batch = page.locator(".widget-dropdown").filter(has_text="batch size").locator("select")
            current = batch.input_value()
            batch.select_option(label="32" if current != "32" else "8")
            page.wait_for_function(
                "before => document.querySelector('.memory-summary').textContent.trim() !== before.trim()",
                arg=before, timeout=60_000)
            after = summary.inner_text()
        finally:
            browser.close()
    assert "Full fine-tuning" in before and "fits" in before
    assert after != before and "Full fine-tuning" in after
