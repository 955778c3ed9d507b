"""Browser tests: Playwright driving Debian's Chromium against the real server.

Every page a test opens is watched for Content-Security-Policy violations (the browser's console
reports each one): a test that triggered one fails, so the whole browser suite runs under the
site's strict policy (docs/SECURITY.md).
"""

from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from tests.conftest import ARTIFACTS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="session")
def chromium():
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is not installed; `make test` installs it (Debian package chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def is_csp_violation(message) -> bool:
    return message.type == "error" and "Content Security Policy" in message.text


class WatchedBrowser:
    """The browser, whose every new context records the CSP violations its pages report."""

    def __init__(self, browser):
        self._browser = browser
        self.violations: list[str] = []

    def new_context(self, **options):
        context = self._browser.new_context(**options)
        context.on("console", lambda message: self.violations.append(f"{message.page.url if message.page else ''}: "
                                                                      f"{message.text}")
                   if is_csp_violation(message) else None)
        return context

    def __getattr__(self, name):
        return getattr(self._browser, name)


@pytest.fixture
def browser(chromium):
    watched = WatchedBrowser(chromium)
    yield watched
    assert not watched.violations, "Content-Security-Policy violations:\n" + "\n".join(watched.violations)


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(20_000)
    yield page
    context.close()


@pytest.fixture
def screenshot(request):
    """Save a screenshot under test-artifacts/<test name>/<label>.png."""
    folder = ARTIFACTS / request.node.name
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, label: str) -> Path:
        path = folder / f"{label}.png"
        page.screenshot(path=str(path), full_page=True)
        return path

    return take
