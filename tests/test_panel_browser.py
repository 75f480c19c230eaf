"""The session panel in a real browser: JupyterLab, a real kernel, Chromium through Playwright.

The test starts JupyterLab on a free local port with a random token and a store of its own,
opens a notebook whose cell shows the panel, runs it, picks a session, types a prompt with
real key presses (Shift+Enter adds a line, Enter sends) and waits for the streamed reply in the
transcript; then it picks two models in compare mode by typing their ids and pressing Enter. The reply streams slowly (``chunk_delay`` in
the store's config), so the test also sees the partial reply while the kernel is idle: the
widgets are updated from the client's event thread, not by a cell that waits.

The screenshot goes to ``tests/artifacts/panel.png`` (not committed). With
``COPILOT_JUPYTER_UPDATE_SCREENSHOT=1`` it also replaces ``docs/images/panel.png``, the
README's picture; a plain test run never changes tracked files.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from envvars import scrubbed_environ

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
DOCS_IMAGE = REPO / "docs" / "images" / "panel.png"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(150),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="needs Chromium at /usr/bin/chromium (apt-get install chromium)",
    ),
]

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
]

PANEL_CELL = "from copilot_jupyter.panel import SessionPanel\n\nSessionPanel()"
PROBE_CELL = "print('kernel', 'answered', 6 * 7)"
PROMPT = (
    "Which three **fruits** keep best in a cool pantry, and how long does each one "
    "usually last before it spoils? Answer briefly"
)


# Elements in the panel (and the output area that holds it) whose content is wider than their
# box: a horizontal scrollbar, or text cut off at the right. One pixel of rounding is allowed.
OVERFLOW_JS = """
() => {
  const panel = document.querySelector('.copilot-panel');
  const boxes = [panel.closest('.jp-OutputArea-output'), panel,
                 ...panel.querySelectorAll('*')];
  return boxes.filter(el => el && el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1
      && getComputedStyle(el).overflowX !== 'visible' && !el.closest('pre'))
    .map(el => `${el.className} ${el.scrollWidth}>${el.clientWidth}`);
}
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(path: Path) -> None:
    cells = [
        {
            "cell_type": "code",
            "execution_count": None,
            "id": cell_id,
            "metadata": {},
            "outputs": [],
            "source": source,
        }
        for cell_id, source in (("panel", PANEL_CELL), ("probe", PROBE_CELL))
    ]
    notebook = {
        "cells": cells,
        "metadata": {
            "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook, indent=1))


def _seed_store(home: Path) -> None:
    """A stored session with some history, so the panel has something to show."""
    code = (
        "from copilot import CopilotClient\n"
        "c = CopilotClient(providers={'echo': {'chunk_delay': 0}})\n"
        "s = c.create_session('tour', model='echo')\n"
        "s.send_and_wait('Show me a `for` loop:\\n```python\\nfor i in range(3):\\n"
        "    print(i)\\n```')\n"
        "c.create_session('scratch', model='echo')\n"
        "c.stop()\n"
    )
    env = {**os.environ, "COPILOT_JUPYTER_HOME": str(home), "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    # Slow the echo model in the kernel so the reply visibly streams.
    # A second usable model name for compare mode.
    (home / "config.toml").write_text(
        '[routes]\necho-b = "echo"\n\n[providers.echo]\nchunk_delay = 0.12\n'
    )


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A running JupyterLab: (base url, token). Killed, with its kernels, at the end."""
    root = tmp_path / "root"
    home = tmp_path / "copilot-home"
    root.mkdir()
    home.mkdir()
    _seed_store(home)
    _notebook(root / "panel_demo.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **scrubbed_environ(),
        "COPILOT_JUPYTER_HOME": str(home),
        "COPILOT_JUPYTER_FALLBACK_MODEL": "echo",
        "COPILOT_JUPYTER_MODEL": "echo",
        "PYTHONPATH": str(REPO),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "jupyter-config"),
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "jupyter-runtime"),
        "IPYTHONDIR": str(tmp_path / "ipython"),
    }
    settings = tmp_path / "lab-settings"
    notification = settings / "@jupyterlab" / "apputils-extension"
    notification.mkdir(parents=True)
    (notification / "notification.jupyterlab-settings").write_text(
        json.dumps({"checkForUpdates": False, "fetchNews": "false"})
    )
    log = (tmp_path / "lab.log").open("wb")
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyter",
            "lab",
            "--no-browser",
            "--ServerApp.ip=127.0.0.1",
            f"--ServerApp.port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            "--ServerApp.allow_root=True",  # CI containers run as root
            f"--ServerApp.root_dir={root}",
            "--ServerApp.disable_check_xsrf=True",
            "--LabApp.news_url=None",
            "--LabApp.extension_manager=readonly",  # no PyPI look-ups
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            f"--LabApp.user_settings_dir={settings}",
            f"--LabApp.workspaces_dir={tmp_path / 'lab-workspaces'}",
        ],
        cwd=root,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: the kernels die with it
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                raise AssertionError(f"JupyterLab exited:\n{(tmp_path / 'lab.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError("JupyterLab did not start within 60 s") from None
                time.sleep(0.25)
        yield base, token
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.wait(timeout=10)
        log.close()


def test_panel_streams_a_reply_in_jupyterlab(lab: tuple[str, str]) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, token = lab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    ignore = ARTIFACTS / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n!.gitignore\n")
    (ARTIFACTS / "panel-failure.png").unlink(missing_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.set_default_timeout(30_000)
            page.goto(f"{base}/lab/tree/panel_demo.ipynb?token={token}")
            editors = page.locator(".jp-Notebook .jp-Cell .cm-content")
            editor = editors.first
            expect(editor).to_be_visible(timeout=60_000)
            page.keyboard.press("Control+b")  # hide the file browser: a wider notebook
            # Run the cell with Shift+Enter once the kernel is up (a cell run before the
            # kernel connects is dropped).
            kernel_idle = page.get_by_text("Python 3 (ipykernel) | Idle")
            expect(kernel_idle).to_be_visible(timeout=60_000)
            editor.click()
            page.keyboard.press("Shift+Enter")
            panel = page.locator(".copilot-panel")
            expect(panel).to_be_visible(timeout=60_000)

            cards = panel.locator(".copilot-picker .cj-session")
            expect(cards).to_have_count(2)
            expect(cards.first.locator(".cj-session-title")).to_have_text("scratch")
            expect(cards.nth(1).locator(".cj-session-title")).to_have_text("tour")
            expect(cards.nth(1).locator(".cj-session-detail")).to_contain_text("echo · 1 turn")
            # the summary is legible: on its own line, not cut off at the right
            summary = cards.nth(1).locator(".cj-session-summary")
            expect(summary).to_contain_text("Show me a `for` loop")
            box = summary.bounding_box()
            list_box = panel.locator(".copilot-picker .cj-session-list").bounding_box()
            assert box and list_box and box["x"] + box["width"] <= list_box["x"] + list_box["width"]
            tour = panel.locator('.copilot-picker .cj-session[data-session="tour"]')
            tour.click()  # stored history (opening it moves it to the top of the list)
            expect(tour).to_have_class(re.compile("cj-selected"))
            expect(tour).to_have_attribute("aria-selected", "true")
            history = panel.locator(".copilot-history")
            expect(history.locator(".cj-assistant pre")).to_contain_text("for i in range(3):")
            expect(panel.locator(".cj-title")).to_contain_text("tour")

            # Shift+Enter in the prompt box adds a line; it does not re-run the panel's cell.
            prompt = panel.locator(".copilot-prompt textarea")
            cell_prompt = page.locator(".jp-Notebook .jp-Cell .jp-InputPrompt").first
            ran = cell_prompt.inner_text()
            prompt.click()
            page.keyboard.type("draft")
            page.keyboard.press("Shift+Enter")
            expect(prompt).to_have_value("draft\n")
            assert cell_prompt.inner_text() == ran
            expect(page.locator(".copilot-panel")).to_have_count(1)
            page.keyboard.press("Control+a")
            page.keyboard.press("Backspace")
            expect(prompt).to_have_value("")
            page.keyboard.type(PROMPT)
            send, stop = panel.locator(".copilot-send"), panel.locator(".copilot-stop")
            expect(send).to_be_enabled()
            page.keyboard.press("Enter")  # Enter sends
            expect(prompt).to_have_value("")
            assert cell_prompt.inner_text() == ran

            # The reply streams in while the kernel is idle: the cell finished long ago,
            # and the widgets are updated from the client's event thread.
            live = panel.locator(".copilot-live")
            expect(live).to_contain_text("echo: Which", timeout=20_000)
            expect(stop).to_be_enabled()
            expect(send).to_be_disabled()
            # Enter while the reply streams is refused like the disabled Send: the text stays.
            prompt.click()
            page.keyboard.type("wait for it")
            page.keyboard.press("Enter")
            expect(panel.locator(".copilot-status")).to_contain_text("still coming")
            expect(prompt).to_have_value("wait for it")
            page.keyboard.press("Control+a")
            page.keyboard.press("Backspace")
            # While the reply streams, the kernel runs another cell.
            editors.nth(1).click()
            page.keyboard.press("Shift+Enter")
            expect(
                page.locator(".jp-OutputArea-output").get_by_text("kernel answered 42")
            ).to_be_visible(timeout=10_000)
            assert "Answer briefly" not in live.inner_text(), "the reply was not streaming"
            assert "echo: Which" not in history.inner_text()

            expect(history).to_contain_text("echo: Which three fruits", timeout=30_000)
            expect(history.locator(".cj-assistant").last).to_contain_text("Answer briefly")
            expect(history.locator("strong").last).to_have_text("fruits")
            expect(live).to_have_text("")
            expect(send).to_be_enabled()
            expect(stop).to_be_disabled()
            expect(prompt).to_have_value("")
            expect(panel.locator(".copilot-status")).to_contain_text("out tokens")

            # No needless scrollbars: nothing in the panel is wider than its box, and the
            # output area around it does not scroll sideways.
            overflow = page.evaluate(OVERFLOW_JS)
            assert overflow == [], f"elements wider than their box: {overflow}"

            page.wait_for_timeout(300)  # let the last layout settle for the picture
            panel.screenshot(path=str(ARTIFACTS / "panel.png"))

            # Compare mode: type two model ids separated by a comma, press Enter.
            panel.locator(".copilot-compare-toggle").click()
            other = panel.locator(".copilot-compare-other input")
            expect(other).to_be_visible()
            # a checkbox per usable model (echo, echo-b, and local:smollm2 where it is installed)
            box = panel.locator(".copilot-compare-models")
            echo = box.get_by_role("checkbox", name="echo", exact=True)
            echo_b = box.get_by_role("checkbox", name="echo-b", exact=True)
            expect(echo).not_to_be_checked()
            other.click()
            page.keyboard.type("echo, echo-b")
            page.keyboard.press("Enter")
            expect(echo).to_be_checked()
            expect(echo_b).to_be_checked()
            expect(other).to_have_value("")
            options = panel.locator(".copilot-model select option").all_inner_texts()
            assert not any("," in option or option.startswith("•") for option in options)
            # a checkbox click takes a model out and puts it back
            echo_b.click()
            expect(echo_b).not_to_be_checked()
            echo_b.click()
            expect(echo_b).to_be_checked()
            prompt.click()
            page.keyboard.type("Pick one")
            page.keyboard.press("Enter")
            columns = panel.locator(".copilot-compare-column")
            expect(columns).to_have_count(2)
            for index in range(2):
                expect(columns.nth(index).locator(".copilot-history")).to_contain_text(
                    "echo: Pick one", timeout=30_000
                )
            expect(panel.locator(".copilot-status")).to_contain_text("Compared echo, echo-b")
            overflow = page.evaluate(OVERFLOW_JS)
            assert overflow == [], f"elements wider than their box: {overflow}"
            panel.screenshot(path=str(ARTIFACTS / "panel-compare.png"))
            # with the file browser open again (a narrower notebook): still no overflow
            page.keyboard.press("Escape")
            page.locator(".jp-Notebook").first.click(position={"x": 5, "y": 5})
            page.keyboard.press("Control+b")
            expect(page.locator(".jp-FileBrowser")).to_be_visible()
            page.wait_for_timeout(300)
            overflow = page.evaluate(OVERFLOW_JS)
            assert overflow == [], f"elements wider than their box: {overflow}"
            panel.screenshot(path=str(ARTIFACTS / "panel-narrow.png"))
            # the session list works from the keyboard too
            scratch = panel.locator('.copilot-picker .cj-session[data-session="scratch"]')
            scratch.focus()
            page.keyboard.press("Enter")
            expect(scratch).to_have_attribute("aria-selected", "true")
            expect(panel.locator(".cj-title")).to_contain_text("showing scratch")
            expect(page.locator(".copilot-panel")).to_have_count(1)  # no cell was run
        except Exception:
            page.screenshot(path=str(ARTIFACTS / "panel-failure.png"), full_page=True)
            raise
        finally:
            browser.close()
    if os.environ.get("COPILOT_JUPYTER_UPDATE_SCREENSHOT") == "1":
        DOCS_IMAGE.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ARTIFACTS / "panel.png", DOCS_IMAGE)
