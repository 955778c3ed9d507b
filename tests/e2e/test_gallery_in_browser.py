"""Galleries in a real browser: save, album, publish, Explore as someone else, like, remix."""

import re

from playwright.sync_api import expect

from tests.e2e.test_generate_in_browser import create_user, sign_in

PROMPT = "a small red square on the left on a white background"


def test_a_published_album_is_found_liked_and_remixed_by_someone_else(live_site, browser, screenshot):
    base = live_site["url"]
    create_user(live_site, "iris")
    create_user(live_site, "jack")

    owner = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    sign_in(owner, base, "iris")
    owner.goto(base + "/generate/")
    owner.get_by_label("Prompt", exact=True).fill(PROMPT)
    owner.get_by_label("Steps", exact=True).fill("10")
    owner.get_by_role("button", name="Generate").click()
    expect(owner.locator("#job-status")).to_have_text("Done", timeout=120_000)
    owner.locator("#results").get_by_role("button", name="Save").click()
    expect(owner.locator("#results").get_by_role("button", name="Saved")).to_be_visible()

    owner.get_by_role("navigation", name="Main").get_by_role("link", name="My images").click()
    expect(owner.locator(".tile-meta").first).to_contain_text("saved")
    owner.locator(".tile-select input").first.check()
    owner.get_by_label("New album title").fill("Red things")
    owner.get_by_role("button", name="Add to album").click()
    expect(owner.get_by_test_id("album-title")).to_have_text("Red things")
    owner.get_by_text("Edit album").click()
    owner.get_by_label("Visibility").select_option("public")
    owner.get_by_role("button", name="Save album").click()
    expect(owner.locator(".page-head .badge")).to_have_text("Public")
    screenshot(owner, "01-published-album")

    visitor = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    sign_in(visitor, base, "jack")
    visitor.get_by_role("navigation", name="Main").get_by_role("link", name="Explore").click()
    visitor.get_by_label("Search prompts").fill("red square")
    visitor.get_by_role("button", name="Search").click()
    tile = visitor.locator(".tile").filter(has_text="red square")
    expect(tile).to_have_count(1)
    expect(tile).to_contain_text("iris")
    screenshot(visitor, "02-explore-as-jack")
    tile.get_by_role("link").first.click()
    expect(visitor.get_by_test_id("image-prompt")).to_have_text(PROMPT)
    visitor.get_by_role("button", name="♡ Like").click()
    expect(visitor.get_by_test_id("like-count")).to_have_text("1")
    screenshot(visitor, "03-liked")
    visitor.get_by_role("link", name="Remix").click()
    expect(visitor).to_have_url(re.compile(r"/generate/\?remix=\d+"))
    expect(visitor.get_by_label("Prompt", exact=True)).to_have_value(PROMPT)
    expect(visitor.get_by_label("Seed", exact=True)).not_to_have_value("")
    screenshot(visitor, "04-remix")
