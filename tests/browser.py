"""Open a page in a real headless Chromium (Debian's /usr/bin/chromium) through Playwright.

Used by the tests of every HTML page yoloforge writes (dataset doctor, run report): the page must
render, every <img> must load, and the browser console must stay free of errors.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

# The flags a sandboxed machine with a closed network needs: no sandbox (root), no GPU, and no
# background connections (they are refused here, many at a time, and slow the start).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class PageCheck:
    """What the browser saw on one page."""

    title: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)  # uncaught exceptions in the page's scripts
    failed_requests: list[str] = field(default_factory=list)
    images: int = 0  # <img> elements
    broken_images: list[str] = field(default_factory=list)  # src of those that did not decode
    text: str = ""  # the rendered text (document.body.innerText)

    @property
    def clean(self) -> bool:
        return not (self.console_errors or self.page_errors or self.failed_requests or self.broken_images)


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        raise RuntimeError("Chromium not found: .ci/run installs it (apt-get install chromium)")
    return path


def open_page(html: str | Path, screenshot: str | Path | None = None) -> PageCheck:
    """Load the local file ``html`` in headless Chromium and report what it logged and showed."""
    from playwright.sync_api import sync_playwright

    url = Path(html).resolve().as_uri()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            check = PageCheck(title="")
            page.on("console", lambda m: check.console_errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: check.page_errors.append(str(e)))
            page.on("requestfailed", lambda r: check.failed_requests.append(r.url))
            page.goto(url, wait_until="load")
            check.title = page.title()
            srcs = page.eval_on_selector_all("img", "els => els.map(e => e.getAttribute('src') || '')")
            broken = page.eval_on_selector_all(
                "img", "els => els.filter(e => !(e.complete && e.naturalWidth > 0)).map(e => e.src)"
            )
            check.images, check.broken_images = len(srcs), list(broken)
            check.text = page.inner_text("body")
            if screenshot is not None:
                page.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return check
