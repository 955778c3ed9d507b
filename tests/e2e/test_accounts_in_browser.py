"""A person signs up, logs out, logs in and opens their profile in a real browser."""

import re

from playwright.sync_api import expect

PASSWORD = "amber-meadow-5172"


def test_a_person_signs_up_logs_out_logs_in_and_sees_their_profile(live_site, page, screenshot):
    base = live_site["url"]
    page.goto(base + "/")
    expect(page.get_by_role("heading", level=1)).to_contain_text("Text to image")
    screenshot(page, "01-home")

    page.get_by_role("link", name="Sign up").first.click()
    page.get_by_label("Username").fill("dana")
    page.get_by_label("Email").fill("dana@example.com")
    page.get_by_label("Password", exact=True).fill(PASSWORD)
    page.get_by_label("Password confirmation").fill(PASSWORD)
    page.get_by_role("button", name="Sign up").click()
    expect(page.get_by_text("Welcome to ldmsite, dana.")).to_be_visible()
    screenshot(page, "02-signed-up")

    page.get_by_test_id("account-menu").click()
    page.get_by_role("button", name="Log out").click()
    nav = page.get_by_role("navigation", name="Main")
    expect(nav.get_by_role("link", name="Log in")).to_be_visible()

    nav.get_by_role("link", name="Log in").click()
    page.get_by_label("Username").fill("dana")
    page.get_by_label("Password").fill("not-the-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text("Please enter a correct username and password")).to_be_visible()
    screenshot(page, "03-wrong-password")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()

    page.get_by_test_id("account-menu").click()
    page.locator(".account-menu").get_by_role("link", name="Profile").click()
    expect(page).to_have_url(re.compile(r"/accounts/profile/$"))
    expect(page.get_by_test_id("profile-heading")).to_have_text("dana")
    expect(page.get_by_label("Email")).to_have_value("dana@example.com")
    screenshot(page, "04-profile")


def test_the_site_fits_a_phone_width_screen(live_site, browser, screenshot):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    try:
        page.goto(live_site["url"] + "/accounts/signup/")
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone ({width}px wide)"
        expect(page.get_by_label("Username")).to_be_visible()
        screenshot(page, "signup-phone")
    finally:
        context.close()
