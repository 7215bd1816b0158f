"""The web page of `inception serve` in a real browser: headless Chromium (the system's own
binary) driven by Playwright, against a real server. The page shows the model's metadata,
classifies two uploaded images with the server's own answers, asks no other host for anything
(it works offline) and logs no error; a full-page screenshot is saved.

Skipped, with the reason, when Playwright or a Chromium binary is missing; with
``INCEPTION_REQUIRE_BROWSER=1`` (CI) that is a failure instead. Environment:
``INCEPTION_CHROMIUM`` (the browser binary; default: ``chromium`` or ``chromium-browser`` on
PATH), ``INCEPTION_SCREENSHOT`` (another path for the screenshot, e.g. docs/serve_page.png),
``INCEPTION_BROWSER_IMAGES`` (images to upload instead of the test's own, separated by
``os.pathsep``: photographs for the README's screenshot)."""

import math
import os
import re
import shutil
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from inception.serve import serve_in_thread

from .conftest import CLASSES

pytestmark = pytest.mark.browser

TIMEOUT_MS = 30_000
VIEWPORT = {"width": 1100, "height": 800}


def _missing(reason: str):
    if os.environ.get("INCEPTION_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason}, and INCEPTION_REQUIRE_BROWSER=1 requires the browser test to run "
                    "(pip install playwright; apt-get install chromium)", pytrace=False)
    pytest.skip(reason)


def _chromium_path() -> str | None:
    given = os.environ.get("INCEPTION_CHROMIUM")
    if given:
        return given if os.path.isfile(given) and os.access(given, os.X_OK) else None
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium binary, once Playwright is known to import; skips (or, with
    INCEPTION_REQUIRE_BROWSER=1, fails) otherwise. Session-scoped so that a test asking for it
    first skips before the session's other fixtures (the served model) are built."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _missing("playwright is not installed")
    executable = _chromium_path()
    if executable is None:
        where = os.environ.get("INCEPTION_CHROMIUM")
        _missing(f"no Chromium binary: INCEPTION_CHROMIUM={where} is not an executable file" if where
                 else "no Chromium binary (chromium or chromium-browser) on PATH; set INCEPTION_CHROMIUM")
    return executable


@pytest.fixture
def browser(chromium):
    """A headless Chromium from the system package (Playwright's own browser download is not
    used), launched so that it runs as root in a container."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, headless=True, timeout=TIMEOUT_MS,
                              args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        try:
            yield b
        finally:
            b.close()


def _upload_paths(served) -> list[Path]:
    given = os.environ.get("INCEPTION_BROWSER_IMAGES")
    if given:
        return [Path(p) for p in given.split(os.pathsep) if p]
    return [served["images"][0], served["images"][2]]       # a JPEG and a PNG of different sizes


def test_web_page_classifies_uploads_like_the_api(chromium, browser, served, tmp_path):    # chromium first: skip fast
    uploads = _upload_paths(served)
    assert len({p.name for p in uploads}) == len(uploads) == 2
    with serve_in_thread(served["onnx"], max_wait_ms=1) as url:
        # the server's own answers for the same bytes, sent as the page sends them (the body)
        expected = {}
        with httpx.Client(base_url=url, timeout=30) as client:
            for path in uploads:
                r = client.post("/v1/classify?topk=5", content=path.read_bytes(),
                                headers={"content-type": "application/octet-stream"})
                assert r.status_code == 200, r.text
                expected[path.name] = r.json()["predictions"][0]["topk"]

        server = urlsplit(url)
        requests, errors = [], []
        page = browser.new_page(viewport=VIEWPORT, device_scale_factor=1)
        page.set_default_timeout(TIMEOUT_MS)
        page.on("request", lambda req: requests.append(req.url))
        page.on("console", lambda msg: errors.append(f"console: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        page.goto(url + "/")

        # the model's metadata
        page.wait_for_function("document.querySelectorAll('#model-fields dt').length > 0", timeout=TIMEOUT_MS)
        dts = page.locator("#model-fields dt").all_inner_texts()
        dds = page.locator("#model-fields dd").all_inner_texts()
        fields = dict(zip(dts, dds))
        assert fields["classes"] == "3"
        assert fields["input"].startswith("32\u00d732")
        assert fields["runtime"].startswith("onnxruntime")
        assert page.locator("#classes li").all_text_contents() == CLASSES
        assert page.locator("#model-status").inner_text() == ""

        # two uploads, two cards with their bars
        page.set_input_files("#files", [str(p) for p in uploads])
        page.wait_for_function("document.querySelectorAll('#results .result .latency').length === 2",
                               timeout=TIMEOUT_MS)
        page.wait_for_function("[...document.querySelectorAll('#results .result img')]"
                               ".every((img) => img.complete && img.naturalWidth > 0)", timeout=TIMEOUT_MS)
        cards = page.locator("#results .result")
        assert cards.count() == 2
        seen = set()
        for i in range(2):
            card = cards.nth(i)
            name = card.locator(".name").inner_text()
            seen.add(name)
            assert card.locator(".error").count() == 0
            labels = card.locator(".bar-row .label").all_inner_texts()
            pcts = [float(t.rstrip("%")) for t in card.locator(".bar-row .pct").all_inner_texts()]
            assert len(labels) == len(pcts) == min(5, len(CLASSES))
            assert set(labels) <= set(CLASSES) and len(set(labels)) == len(labels)
            assert abs(sum(pcts) - 100) <= 0.05 * len(pcts) + 1e-9, (name, pcts)     # each rounded to 0.1
            want = expected[name]
            assert labels == [t["class"] for t in want], (name, labels, want)
            for shown, t in zip(pcts, want):
                assert math.isclose(shown, 100 * t["prob"], abs_tol=0.05 + 1e-4), (name, shown, t)
            latency = card.locator(".latency").inner_text()
            assert re.match(r"server \d+\.\d ms \(decode .*\) \u00b7 round trip \d+ ms$", latency), latency
        assert seen == set(expected)

        for path in [tmp_path / "serve_page.png", os.environ.get("INCEPTION_SCREENSHOT")]:
            if path:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(path), full_page=True)
        page.close()

    # offline: nothing but the server itself (and the page's own data:/blob: URLs)
    for u in requests:
        parts = urlsplit(u)
        assert parts.scheme in ("data", "blob") or (parts.hostname, parts.port) == (server.hostname, server.port), u
    assert any(urlsplit(u).path == "/v1/classify" for u in requests)
    assert errors == []
    assert (tmp_path / "serve_page.png").stat().st_size > 10_000
