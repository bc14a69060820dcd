"""The attack explorer in a real browser: JupyterLab + headless Chromium driven by Playwright.

Starts JupyterLab on 127.0.0.1 (random free port, random token) in a scratch folder holding a
copy of ``notebooks/06_attack_explorer.ipynb`` (so the committed notebook is never saved over),
opens it in Debian's ``chromium``, runs all cells, drags the eps slider and checks that the
metrics shown change and that the figure is rendered. Screenshots, the JupyterLab log and the
browser console go to ``test-output/browser/``. JupyterLab (and its kernels) are stopped
whatever happens.

Only runs when asked for: ``make test-browser`` (``pytest -m browser tests/test_browser.py``).
A plain ``pytest`` skips it, as does a machine without ``chromium``
(``apt-get install chromium``; a browser download by Playwright cannot work offline).
"""
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "06_attack_explorer.ipynb"
OUT = ROOT / "test-output" / "browser"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--no-first-run", "--disable-dev-shm-usage"]
SERVER_TIMEOUT_S = 180
RUN_ALL_TIMEOUT_S = 900  # first kernel start, a codec trained on the spot, the eps grid
MOVE_TIMEOUT_S = 300

# JupyterLab user settings for a quiet, deterministic page
LAB_SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings":
        {"fetchNews": "false", "checkForUpdates": False},
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings":
        {"windowingMode": "none"},  # keep every cell in the DOM
}


@pytest.fixture(scope="module", autouse=True)
def _only_when_asked(request):
    marks = request.config.getoption("-m") or ""
    asked = "browser" in marks and "not browser" not in marks
    if not (asked or os.environ.get("NIC_BROWSER_TESTS") == "1"):
        pytest.skip("real-browser test: run `make test-browser` (pytest -m browser)")


@pytest.fixture(scope="module")
def chromium():
    path = shutil.which("chromium")
    if not path and os.environ.get("NIC_REQUIRE_BROWSER") == "1":  # make test-browser
        pytest.fail("chromium is not installed (apt-get install chromium chromium-driver)")
    if not path:
        pytest.skip("chromium is not installed: `apt-get install chromium` "
                    "(make test-browser does it)")
    pytest.importorskip("playwright.sync_api", reason="the playwright Python package is needed")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _api(url: str, method: str = "GET", timeout: float = 10.0):
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        body = r.read()
    return json.loads(body) if body.strip() else None


def _stop(proc: subprocess.Popen, base: str, token: str) -> None:
    """Shut the kernels and the server down cleanly, then signal the process group."""
    if proc.poll() is None:
        try:
            for k in _api(f"{base}/api/kernels?token={token}") or []:
                _api(f"{base}/api/kernels/{k['id']}?token={token}", "DELETE", timeout=30)
        except (OSError, urllib.error.URLError, ValueError):
            pass
        try:
            _api(f"{base}/api/shutdown?token={token}", "POST")
        except (OSError, urllib.error.URLError, ValueError):
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
        if proc.poll() is not None:
            break
        try:
            os.killpg(proc.pid, sig)  # the group this fixture started (start_new_session)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            pass


@pytest.fixture()
def lab():
    """JupyterLab on 127.0.0.1 with a token, in a scratch copy; always stopped."""
    if OUT.exists():
        shutil.rmtree(OUT)
    work, settings = OUT / "work", OUT / "lab-settings"
    work.mkdir(parents=True)
    shutil.copy(NOTEBOOK, work / NOTEBOOK.name)
    for name, value in LAB_SETTINGS.items():
        path = settings / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(value))
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "JUPYTER_CONFIG_DIR": str(OUT / "jupyter-config"),
           "JUPYTER_RUNTIME_DIR": str(OUT / "jupyter-runtime")}
    shared = ROOT.parent / "shared" / "data"
    if not env.get("NIC_DATA") and (shared / "kodak").is_dir():  # as .ci/run does
        env["NIC_DATA"] = str(shared)
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
           f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={work}",
           f"--LabApp.user_settings_dir={settings}",
           f"--LabApp.workspaces_dir={OUT / 'lab-workspaces'}",
           "--LabApp.news_url=", "--LabApp.expose_app_in_browser=True",
           "--ServerApp.allow_remote_access=False", "--ServerApp.allow_root=True",
           "--LabApp.extension_manager=readonly"]
    log = open(OUT / "jupyterlab.log", "w")
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"JupyterLab exited with {proc.returncode}; see "
                                   f"{OUT / 'jupyterlab.log'}")
            try:
                _api(f"{base}/api/status?token={token}", timeout=5)
                break
            except (OSError, urllib.error.URLError):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"JupyterLab did not answer within {SERVER_TIMEOUT_S} s")
                time.sleep(0.5)
        yield {"base": base, "token": token, "proc": proc, "work": work}
    finally:
        _stop(proc, base, token)
        log.close()


KERNEL_IDLE = """() => {
  const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;
  const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!(k && k.status === 'idle' && w.content && w.content.widgets.length);
}"""

EXPLORER_OR_ERROR = """() => {
  if (document.querySelector('.nic-explorer .nic-metrics-box table')) return 'ok';
  for (const el of document.querySelectorAll('.jp-OutputArea-output')) {
    const t = el.innerText || '';
    if (t.includes('Traceback (most recent call last)') || t.includes('Error Traceback'))
      return 'error: ' + t.slice(0, 4000);
  }
  return null;
}"""

FIGURE_STATE = """() => {
  const img = document.querySelector('.nic-explorer img.nic-figure');
  return img ? {src: img.src, w: img.naturalWidth, h: img.naturalHeight,
                complete: img.complete} : null;
}"""


def _text(page, selector: str) -> str:
    return page.locator(selector).first.inner_text()


def test_explorer_in_jupyterlab(lab, chromium):
    from playwright.sync_api import sync_playwright

    t0 = time.monotonic()
    timings, console = {}, []
    url = f"{lab['base']}/lab/tree/{NOTEBOOK.name}?token={lab['token']}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        page = None
        try:
            page = browser.new_page(viewport={"width": 1500, "height": 1350})
            page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
            page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
            page.goto(url, timeout=120_000)
            page.wait_for_function(KERNEL_IDLE, timeout=SERVER_TIMEOUT_S * 1000, polling=500)
            timings["kernel_idle_s"] = time.monotonic() - t0
            page.evaluate("() => window.jupyterapp.commands.execute('notebook:run-all-cells')")
            state = page.wait_for_function(EXPLORER_OR_ERROR, timeout=RUN_ALL_TIMEOUT_S * 1000,
                                           polling=1000).json_value()
            assert state == "ok", f"a cell failed in JupyterLab:\n{state}"
            timings["run_all_s"] = time.monotonic() - t0
            page.evaluate("() => window.jupyterapp.shell.collapseLeft()")
            ui = page.locator(".nic-explorer").first
            ui.scroll_into_view_if_needed()
            page.wait_for_function(
                "() => { const i = document.querySelector('.nic-explorer img.nic-figure');"
                " return i && i.complete && i.naturalWidth > 0; }", timeout=60_000)
            # let the eps grid finish (status line) so the slider move is a cache hit
            page.wait_for_function(
                "() => { const s = document.querySelector('.nic-explorer .nic-status');"
                " return s && /grid filled|cached/.test(s.innerText); }",
                timeout=RUN_ALL_TIMEOUT_S * 1000, polling=500)
            before = _text(page, ".nic-explorer .nic-metrics-box")
            fig_before = page.evaluate(FIGURE_STATE)
            readout_before = _text(page, ".nic-eps .widget-readout")
            page.screenshot(path=str(OUT / "explorer_before.png"))

            # drag the eps slider's handle to the right end of its track
            handle = page.locator(".nic-eps .noUi-handle").first
            track = page.locator(".nic-eps .noUi-target").first
            hb, tb = handle.bounding_box(), track.bounding_box()
            page.mouse.move(hb["x"] + hb["width"] / 2, hb["y"] + hb["height"] / 2)
            page.mouse.down()
            page.mouse.move(tb["x"] + tb["width"] + 20, hb["y"] + hb["height"] / 2, steps=12)
            page.mouse.up()
            t_move = time.monotonic()
            page.wait_for_function(
                "(b) => { const r = document.querySelector('.nic-eps .widget-readout');"
                " return r && r.innerText.trim() !== b; }", arg=readout_before,
                timeout=30_000)
            readout_after = _text(page, ".nic-eps .widget-readout")
            page.wait_for_function(
                "(b) => { const m = document.querySelector('.nic-explorer .nic-metrics-box');"
                " return m && m.innerText !== b; }", arg=before, timeout=MOVE_TIMEOUT_S * 1000)
            page.wait_for_function(
                "(s) => { const i = document.querySelector('.nic-explorer img.nic-figure');"
                " return i && i.src !== s && i.complete && i.naturalWidth > 0; }",
                arg=fig_before["src"], timeout=MOVE_TIMEOUT_S * 1000)
            timings["slider_update_s"] = time.monotonic() - t_move
            after = _text(page, ".nic-explorer .nic-metrics-box")
            fig_after = page.evaluate(FIGURE_STATE)
            status = _text(page, ".nic-explorer .nic-status")
            ui.scroll_into_view_if_needed()
            page.screenshot(path=str(OUT / "explorer.png"))
            ui.screenshot(path=str(OUT / "explorer_widget.png"))
        except BaseException:
            if page is not None:
                try:
                    page.screenshot(path=str(OUT / "failure.png"))
                except Exception:  # noqa: BLE001 - best effort, the real error follows
                    pass
            raise
        finally:
            (OUT / "browser-console.log").write_text("\n".join(console) + "\n")
            browser.close()

    timings["total_s"] = time.monotonic() - t0
    summary = {"timings": timings, "readout": [readout_before, readout_after],
               "metrics_before": before, "metrics_after": after, "status_after_move": status,
               "figure_px": [fig_after["w"], fig_after["h"]]}
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(timings))

    assert readout_before == "0.0005" and readout_after == "0.002", summary["readout"]
    assert after != before
    assert "eps = 0.002" in after and "eps = 0.0005" in before
    for t in (before, after):
        assert "bpp real" in t and "attacked" in t and "noise MSE" in t
    assert status == "cached", "the precomputed grid makes the slider a cache hit"
    assert fig_after["w"] > 400 and fig_after["h"] > 300
    assert (OUT / "explorer.png").stat().st_size > 20_000
