"""The Content-Security-Policy in a real browser: the site's pages run under it without a single
violation, it really blocks injected inline script, and /api/docs/ renders every operation with no
request leaving the server (Swagger UI comes from drf-spectacular-sidecar, not a CDN).

(tests/e2e/conftest.py also fails any browser test whose pages report a CSP violation.)
"""

import re

from playwright.sync_api import expect

from tests.e2e.test_generate_in_browser import create_user, sign_in
from tests.e2e.test_moderation_in_browser import MAKE_STAFF, PASSWORD, shell

INJECT_INLINE_SCRIPT = """() => {
  const script = document.createElement("script");
  script.textContent = "window.injectedRan = true";
  document.body.append(script);
  document.body.insertAdjacentHTML("beforeend", '<img src="/nowhere" onerror="window.injectedRan = true">');
}"""


def foreign_requests(page, base):
    """Abort, and record, every request the page makes to anywhere but the server under test."""
    leaving = []

    def route(request_route):
        url = request_route.request.url
        if url.startswith(base) or url.startswith("data:"):
            request_route.continue_()
        else:
            leaving.append(url)
            request_route.abort()

    page.route("**/*", route)
    return leaving


def test_the_pages_of_a_person_and_of_staff_log_no_csp_violation(live_site, browser):
    base = live_site["url"]
    create_user(live_site, "pia")
    shell(live_site, MAKE_STAFF.format(name="stan", password=PASSWORD))
    for username, paths in (("pia", ["/", "/generate/", "/generations/", "/images/", "/albums/", "/explore/",
                                     "/accounts/profile/", "/accounts/tokens/", "/accounts/password/",
                                     "/u/pia/", "/api/docs/"]),
                            ("stan", ["/moderation/", "/moderation/blocklist/", "/moderation/audit/",
                                      "/moderation/people/pia/", "/workers/", "/admin/"])):
        page = browser.new_context().new_page()
        leaving = foreign_requests(page, base)
        sign_in(page, base, username)
        for path in paths:
            response = page.goto(base + path)
            assert response.status == 200, (path, response.status)
            assert "script-src 'self'" in response.headers["content-security-policy"], path
            page.wait_for_load_state("networkidle")
        assert not leaving, leaving
        page.context.close()
    # The browser fixture fails the test if any of these pages reported a violation.


def test_the_policy_blocks_inline_script_injected_into_a_page(live_site, chromium):
    """Were an attacker to get markup into a page, the browser would not run it."""
    context = chromium.new_context()  # not the watching fixture: the violation is the point here
    page = context.new_page()
    violations = []
    page.on("console", lambda message: violations.append(message.text)
            if "Content Security Policy" in message.text else None)
    page.goto(live_site["url"] + "/accounts/login/")
    page.evaluate(INJECT_INLINE_SCRIPT)
    page.wait_for_timeout(500)
    assert page.evaluate("window.injectedRan") is None
    assert any("script-src" in text for text in violations), violations
    context.close()


def test_the_api_docs_render_every_operation_with_no_network_beyond_the_server(live_site, page):
    base = live_site["url"]
    leaving = foreign_requests(page, base)
    page.goto(base + "/api/docs/")
    expect(page.locator(".opblock").first).to_be_visible(timeout=30_000)
    operations = page.locator(".opblock")
    assert operations.count() >= 40, operations.count()
    expect(page.locator(".opblock-summary-path").filter(has_text=re.compile(r"^/api/v1/generations/$")).first
           ).to_be_visible()
    assert not leaving, f"requests beyond the server: {leaving}"
