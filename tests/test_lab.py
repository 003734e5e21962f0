"""JupyterLab, as a reader meets it: it serves a committed notebook, the figures render, opening it changes nothing.

A real JupyterLab and headless Chromium (Debian's `chromium` package); skipped where Chromium is absent.
Reproduce: `apt-get install chromium && .venv/bin/python -m pytest tests/test_lab.py`.
"""
import re
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed")]
DIRTY_TAB = re.compile(r'class="lm-TabBar-tab[^"]*jp-mod-dirty')
FIGURE = re.compile(r'jp-RenderedImage[^>]*>\s*<img src="data:image/png;base64,')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A JupyterLab server on the project root, as `make lab` starts it (no browser, a random token and port)."""
    port, token = _free_port(), secrets.token_hex(8)
    jupyter = Path(sys.executable).parent / "jupyter"
    proc = subprocess.Popen([str(jupyter), "lab", "--no-browser", f"--port={port}", f"--ServerApp.token={token}",
                             f"--ServerApp.root_dir={ROOT}", "--LabApp.default_url=/lab/tree/notebooks",
                             "--allow-root"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("JupyterLab did not start within 60 s")
        yield base, token, tmp_path_factory.mktemp("chromium")
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _rendered(lab, path: str) -> str:
    """The page's DOM after JupyterLab has opened `path` (40 s of virtual time for its scripts)."""
    base, token, profile = lab
    out = subprocess.run([CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", f"--user-data-dir={profile}",
                          "--window-size=1400,5000", "--virtual-time-budget=40000", "--dump-dom",
                          f"{base}/lab/tree/{path}?token={token}"], capture_output=True, text=True, timeout=180)
    return out.stdout


def test_a_committed_notebook_opens_with_its_figures_rendered_and_unmodified(lab):
    dom = _rendered(lab, "notebooks/01_data_exploration.ipynb")
    assert "jp-Notebook" in dom, "JupyterLab did not open the notebook"
    problems = [what for what, bad in [("no figure rendered in its output areas", not FIGURE.search(dom)),
                                       ("opening it marked it modified", DIRTY_TAB.search(dom))] if bad]
    assert not problems
