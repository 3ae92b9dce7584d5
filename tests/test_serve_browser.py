"""The serve page driven as a person would: the real server on a loopback port, headless Chromium (Debian's
``chromium``, driven by Playwright with the system browser: nothing is downloaded). Skips with a message when
the browser is absent; ``.ci/run`` installs it. Saves a screenshot of the page to ``$BEATREC_SCREENSHOT_DIR``
(default: the test's temporary directory)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def server(served: tuple[Path, Path]):  # noqa: ANN201
    """``beatrec serve --port 0`` in a subprocess; yields its URL."""
    proc = subprocess.Popen([sys.executable, "-m", "beatrec", "serve", "--run", str(served[1]), "--port", "0",
                             "--quiet", "--set", "wait_ms=50"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        line = proc.stdout.readline()  # "beatrec serve: ... on http://127.0.0.1:PORT/ (...)"
        if "http://" not in line:
            proc.kill()
            pytest.fail(f"server did not start: {line!r} {proc.stderr.read()[-2000:]}")
        url = line.split(" on ", 1)[1].split(" ", 1)[0]
        assert url.startswith("http://127.0.0.1:")  # loopback by default
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium; "
                                             ".ci/run does it)")
def test_page_picks_a_user_shows_explanations_and_builds_a_new_user(server: str, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright (pip, dev extra) is not installed")
    out = Path(os.environ.get("BEATREC_SCREENSHOT_DIR", tmp_path))
    out.mkdir(parents=True, exist_ok=True)
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server)
        page.wait_for_selector("#user-suggestions button", timeout=60_000)
        assert "users" in page.text_content("#health")
        page.click("#user-suggestions button >> nth=0")
        page.wait_for_selector("#recs .explanation:not(.pending)", timeout=60_000)
        recs = page.locator("#recs li.rec")
        assert recs.count() == 5
        first = page.text_content("#recs li.rec >> nth=0 >> .explanation")
        assert first and "no explanation" not in first
        assert page.locator("#user-tokens .token").count() >= 2
        page.wait_for_selector("#recs li.rec >> nth=0 >> .tokens .token", timeout=60_000)  # item tokens
        page.click("#recs li.rec >> nth=0 >> button")  # attention map
        page.wait_for_selector("#attention table td.word", timeout=60_000)
        page.screenshot(path=str(out / "serve_page_user.png"), full_page=True)
        # a brand-new user from two searched items
        page.fill("#item-search", "")
        page.click("#search-form button")
        page.wait_for_selector("#item-results .add-item")
        page.click("#item-results .add-item >> nth=0")
        page.click("#item-results .add-item >> nth=1")
        assert page.locator("#basket li").count() == 2
        page.click("#create-user")
        page.wait_for_function("document.querySelector('#user-title').textContent.startsWith('New user')",
                               timeout=60_000)
        page.wait_for_selector("#recs .explanation:not(.pending)", timeout=60_000)
        page.screenshot(path=str(out / "serve_page_new_user.png"), full_page=True)
        # a bad id shows the server's message, not a broken page
        page.fill("#user-id", "999999")
        page.click("#load-user")
        page.wait_for_selector("#error:not([hidden])")
        assert "unknown user" in page.text_content("#error")
        page.goto(server.rstrip("/") + "/docs")  # the OpenAPI page renders offline (Swagger UI served locally)
        page.wait_for_function("document.querySelectorAll('.swagger-ui .opblock').length > 0", timeout=60_000)
        assert "/v1/recommend" in page.text_content(".swagger-ui")
        browser.close()
    assert not errors, errors
    assert (out / "serve_page_user.png").stat().st_size > 10_000
