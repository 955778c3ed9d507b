"""Generating in a real browser with the built-in model: live previews, the result, cancel."""

from playwright.sync_api import expect

from tests.conftest import manage

PASSWORD = "amber-meadow-5172"

# The job cards are created on submit: watch every preview in the stack, from before the first exists.
WATCH_PREVIEW = """() => {
  window.previewSources = new Set();
  new MutationObserver((records) => records.forEach((r) => {
    if (r.target.classList && r.target.classList.contains('job-preview') && r.target.src) window.previewSources.add(r.target.src);
  })).observe(document.getElementById('job-stack'), {subtree: true, attributes: true, attributeFilter: ['src']});
}"""


def sign_in(page, base, username):
    page.goto(base + "/accounts/login/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("account-menu")).to_have_text(username)


def create_user(live_site, username):
    result = manage(live_site["env"], "shell", "-c",
                    f"from django.contrib.auth.models import User; User.objects.create_user('{username}', '{username}@example.com', '{PASSWORD}')")
    assert result.returncode == 0, result.stderr


def test_a_person_watches_an_image_form_and_cancels_another(live_site, page, screenshot):
    base = live_site["url"]
    create_user(live_site, "gina")
    sign_in(page, base, "gina")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Generate").click()
    expect(page.get_by_label("Model")).to_contain_text("ldm-shapes (built-in)")
    page.get_by_label("Prompt", exact=True).fill("a large yellow circle in the center on a blue background")
    page.get_by_label("Steps", exact=True).fill("80")
    page.get_by_label("Seed", exact=True).fill("11")
    page.evaluate(WATCH_PREVIEW)
    page.get_by_role("button", name="Generate").click()

    # Functions, not expression strings: Playwright evaluates a string with eval(), which the site's
    # Content-Security-Policy blocks (no 'unsafe-eval').
    page.wait_for_function("() => window.previewSources.size >= 2", timeout=120_000)
    screenshot(page, "01-mid-generation")
    expect(page.locator("#job-status")).to_have_text("Done", timeout=120_000)
    result = page.locator("#results .result img")
    expect(result).to_have_count(1)
    assert page.evaluate("window.previewSources.size") >= 2, "the preview changed at least twice"
    # The tile appears before its image has downloaded; wait for the bytes, then check the size.
    page.wait_for_function("() => document.querySelector('#results img').complete", timeout=30_000)
    assert page.evaluate("document.querySelector('#results img').naturalWidth") == 64
    expect(page.locator("#job-list li").first).to_contain_text("Done")
    screenshot(page, "02-finished")

    page.get_by_label("Steps", exact=True).fill("150")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#job-status")).to_have_text("Generating", timeout=60_000)
    page.locator("#job-stack .job-card").first.get_by_role("button", name="Cancel").click()
    expect(page.locator("#job-status")).to_have_text("Cancelled", timeout=30_000)
    screenshot(page, "03-cancelled")


def test_form_errors_appear_next_to_their_fields(live_site, page):
    base = live_site["url"]
    create_user(live_site, "hugo")
    sign_in(page, base, "hugo")
    page.goto(base + "/generate/")
    page.get_by_label("Prompt", exact=True).fill("a red square")
    page.get_by_label("Width", exact=True).fill("70")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator('[data-errors-for="width"]')).to_contain_text("multiple of 8")
    expect(page.locator("#job-stack .job-card")).to_have_count(0)
    expect(page.get_by_label("Width", exact=True)).to_be_focused()
