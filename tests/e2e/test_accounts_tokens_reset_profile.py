"""Accounts in a real browser: a token created once stays one token on reload and is copied with a
button; a forgotten password is reset through the email the console backend prints (the default of
`make run`); a profile gets a bio and an avatar that the public page shows with its counts."""

import io
import re
import time

from PIL import Image as Picture
from playwright.sync_api import expect

from tests.e2e.test_generate_in_browser import PASSWORD, create_user, sign_in

PHONE = {"width": 390, "height": 844}


def test_reloading_the_token_page_after_creating_a_token_leaves_one_token(live_site, browser, screenshot):
    base = live_site["url"]
    create_user(live_site, "tara")
    for viewport, suffix in (({"width": 1280, "height": 800}, "1280"), (PHONE, "390")):
        context = browser.new_context(viewport=viewport, permissions=["clipboard-read", "clipboard-write"])
        page = context.new_page()
        sign_in(page, base, "tara")
        page.goto(base + "/accounts/tokens/")
        page.get_by_label("Name").fill(f"render script {suffix}")
        page.get_by_role("button", name="Create token").click()
        token = page.get_by_test_id("new-token")
        expect(token).to_contain_text("ldm_")
        assert "ldm_" not in page.url  # never in the address bar (or any log of it)
        raw = token.inner_text().strip()
        page.get_by_role("button", name="Copy").click()
        expect(page.get_by_role("button", name="Copied")).to_be_visible()
        assert page.evaluate("navigator.clipboard.readText()") == raw
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"], f"the tokens page scrolls sideways ({width}px)"
        screenshot(page, f"01-created-{suffix}")

        page.reload()
        rows = page.locator("#token-list tbody tr[data-token]")
        expect(rows.filter(has_text=f"render script {suffix}")).to_have_count(1)
        expect(page.get_by_test_id("new-token")).to_have_count(0)  # shown once only
        screenshot(page, f"02-reloaded-{suffix}")
        context.close()
    page = browser.new_context().new_page()
    sign_in(page, base, "tara")
    page.goto(base + "/accounts/tokens/")
    expect(page.locator("#token-list tbody tr[data-token]")).to_have_count(2)  # one per width, no duplicate
    page.context.close()


def test_a_forgotten_password_is_reset_through_the_email_the_console_prints(live_site, page, screenshot):
    base = live_site["url"]
    # The server runs as `make run` runs it: no email setting in its environment, so the console backend.
    assert not any(name.startswith(("LDM_EMAIL", "EMAIL_")) for name in live_site["env"])
    log = live_site["data_dir"].parent / "daphne.log"
    create_user(live_site, "rosa")

    page.goto(base + "/accounts/login/")
    page.get_by_role("link", name="Forgot your password?").click()
    page.get_by_label("Email").fill("rosa@example.com")
    screenshot(page, "01-reset-form")
    page.get_by_role("button", name="Send reset link").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    screenshot(page, "02-check-your-email")

    link = None
    for _ in range(50):
        found = re.search(r"(http://\S+/accounts/reset/\S+/)", log.read_text())
        if found:
            link = found.group(1)
            break
        time.sleep(0.1)
    assert link, "the console backend printed no reset email:\n" + log.read_text()[-2000:]
    assert "To: rosa@example.com" in log.read_text()

    page.goto(link)
    page.get_by_label("New password", exact=True).fill("a-brand-new-pass-3141")
    page.get_by_label("New password confirmation").fill("a-brand-new-pass-3141")
    screenshot(page, "03-new-password")
    page.get_by_role("button", name="Set new password").click()
    expect(page.get_by_role("heading", name="Your password is reset")).to_be_visible()
    screenshot(page, "04-reset-complete")

    page.get_by_role("main").get_by_role("link", name="Log in").click()
    page.get_by_label("Username").fill("rosa")
    page.get_by_label("Password").fill("a-brand-new-pass-3141")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_test_id("account-menu")).to_have_text("rosa")


def test_a_profile_with_a_bio_and_an_avatar_and_its_public_page(live_site, browser, screenshot, tmp_path):
    base = live_site["url"]
    create_user(live_site, "nora")
    avatar = tmp_path / "me.png"
    picture = Picture.new("RGB", (400, 300), (60, 120, 220))
    picture.paste((250, 200, 40), (150, 100, 250, 200))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    avatar.write_bytes(buffer.getvalue())

    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    sign_in(page, base, "nora")
    page.get_by_test_id("account-menu").click()
    page.locator(".account-menu").get_by_role("link", name="Profile").click()
    page.get_by_label("Display name").fill("Nora N.")
    page.get_by_label("Bio").fill("I make tiny pictures of shapes.")
    page.get_by_label("Avatar").set_input_files(str(avatar))
    page.get_by_role("button", name="Save profile").click()
    expect(page.get_by_text("Profile saved.")).to_be_visible()
    expect(page.locator("img.avatar")).to_be_visible()
    screenshot(page, "01-profile-saved")
    page.get_by_test_id("account-menu").click()
    expect(page.locator(".account-menu").get_by_role("link", name="My reports")).to_be_visible()
    page.context.close()

    for viewport, suffix in (({"width": 1280, "height": 800}, "1280"), (PHONE, "390")):
        visitor = browser.new_context(viewport=viewport).new_page()
        visitor.goto(base + "/u/nora/")
        expect(visitor.get_by_role("heading", level=1)).to_have_text("Nora N.")
        expect(visitor.get_by_test_id("profile-bio")).to_have_text("I make tiny pictures of shapes.")
        expect(visitor.get_by_test_id("public-image-count")).to_contain_text("0 public images")
        loaded = visitor.locator("img.avatar").evaluate("img => img.complete && img.naturalWidth")
        assert loaded == 256
        assert visitor.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
        screenshot(visitor, f"02-public-profile-{suffix}")
        visitor.context.close()


def test_a_form_with_errors_brings_the_first_error_into_view_once(live_site, page):
    base = live_site["url"]
    create_user(live_site, "omar")
    sign_in(page, base, "omar")
    page.goto(base + "/accounts/tokens/")
    page.get_by_label("Generate: submit and cancel generation jobs").uncheck()
    page.get_by_label("Read: see your jobs, images, albums and the public gallery").uncheck()
    page.get_by_role("button", name="Create token").click()
    expect(page.locator(".errorlist")).to_have_count(2)  # name and scopes, each once
    expect(page.get_by_label("Name")).to_be_focused()
    assert page.get_by_text("This field is required.").count() == 2
