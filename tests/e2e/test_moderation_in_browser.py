"""Moderation in a real browser: a person reports an image, staff find it in the review queue and
hide it, and it is gone from Explore for everyone else while its owner sees why."""

import re

from playwright.sync_api import expect

from tests.conftest import manage
from tests.e2e.test_generate_in_browser import PASSWORD, create_user, sign_in

SPAM = "a rude banner full of spam links"
FINE = "a calm green meadow under a blue sky"

MAKE_STAFF = ("from django.contrib.auth.models import User; "
              "User.objects.create_user('{name}', '{name}@example.com', '{password}', is_staff=True)")

# Images made the way workers make them (generation.outputs.store_generated_image), so no model runs.
PUBLISH_IMAGES = """
from django.contrib.auth.models import User
from PIL import Image as Picture
from gallery.services import set_image_visibility
from generation.outputs import store_generated_image
from generation.diffusion import format_parameters
from generation.diffusion.request import validate_request
from generation.models import DiffusionModel, Generation
model = DiffusionModel.objects.get_or_create(slug="shapes", defaults=dict(
    name="Shapes", source="/nonexistent", default_width=64, default_height=64))[0]
owner = User.objects.get(username="mona")
for seed, (prompt, color) in enumerate([(%r, (220, 40, 40)), (%r, (40, 180, 60))]):
    request = validate_request({"prompt": prompt, "seed": seed, "width": 64, "height": 64, "steps": 25,
                                "sampler": "DDIM"}, model.limits())
    job = Generation.objects.create(owner=owner, model=model, params=request.to_dict(), status="succeeded")
    metadata = {**request.to_dict(), "model": {"name": model.name}}
    image = store_generated_image(job, 0, Picture.new("RGB", (64, 64), color), metadata,
                                  format_parameters(metadata), 30.0)
    set_image_visibility(image, "public")
    print("IMAGE", image.pk)
""" % (SPAM, FINE)


def shell(live_site, code):
    result = manage(live_site["env"], "shell", "-c", code)
    assert result.returncode == 0, result.stderr
    return result.stdout


def new_page(browser):
    return browser.new_context(viewport={"width": 1280, "height": 900}).new_page()


def test_a_reported_image_is_hidden_by_staff_and_leaves_explore_for_everyone_else(live_site, browser, screenshot):
    base = live_site["url"]
    for name in ("mona", "rita", "vera"):
        create_user(live_site, name)
    shell(live_site, MAKE_STAFF.format(name="sven", password=PASSWORD))
    output = shell(live_site, PUBLISH_IMAGES)
    spam_id, fine_id = [int(line.split()[1]) for line in output.splitlines() if line.startswith("IMAGE ")]

    reporter = new_page(browser)
    sign_in(reporter, base, "rita")
    expect(reporter.get_by_role("navigation", name="Main").get_by_role("link", name="Moderation")).to_have_count(0)
    reporter.get_by_role("navigation", name="Main").get_by_role("link", name="Explore").click()
    reporter.locator(f'.tile[data-image="{spam_id}"]').get_by_role("link").first.click()
    expect(reporter.get_by_test_id("image-prompt")).to_have_text(SPAM)
    reporter.get_by_text("Report this image").click()
    reporter.get_by_label("Reason").select_option("spam")
    reporter.get_by_label("Details (optional)").fill("Links to a scam shop")
    reporter.get_by_role("button", name="Send report").click()
    expect(reporter.locator(".messages")).to_contain_text("Staff will review your report")
    screenshot(reporter, "01-reported")

    moderator = new_page(browser)
    sign_in(moderator, base, "sven")
    moderator.get_by_role("navigation", name="Main").get_by_role("link", name="Moderation").click()
    item = moderator.get_by_test_id("report-queue").locator(f'[data-image="{spam_id}"]')
    expect(item).to_contain_text(SPAM)
    expect(item).to_contain_text("1 report")
    expect(item).to_contain_text("Spam ×1")
    screenshot(moderator, "02-review-queue")
    item.get_by_role("link", name="Review").click()
    expect(moderator.get_by_text("Links to a scam shop")).to_be_visible()
    moderator.get_by_label("Reason for hiding (the owner sees it)").fill("Spam: links to a scam shop")
    moderator.get_by_role("button", name="Hide image").click()
    expect(moderator.locator(".messages")).to_contain_text(f"Image {spam_id} is hidden")
    expect(moderator.get_by_test_id("hidden-status")).to_contain_text("Spam: links to a scam shop")
    screenshot(moderator, "03-hidden-by-staff")
    moderator.get_by_role("link", name="Audit log").click()
    expect(moderator.get_by_test_id("audit-log")).to_contain_text("Hid image")

    visitor = new_page(browser)
    sign_in(visitor, base, "vera")
    visitor.get_by_role("navigation", name="Main").get_by_role("link", name="Explore").click()
    expect(visitor.locator(f'.tile[data-image="{fine_id}"]')).to_have_count(1)
    expect(visitor.locator(f'.tile[data-image="{spam_id}"]')).to_have_count(0)
    expect(visitor.get_by_text(SPAM)).to_have_count(0)
    screenshot(visitor, "04-explore-without-it")
    response = visitor.goto(f"{base}/images/{spam_id}/")
    assert response.status == 404
    assert visitor.request.get(f"{base}/images/{spam_id}/file").status == 404

    owner = new_page(browser)
    sign_in(owner, base, "mona")
    owner.goto(f"{base}/images/{spam_id}/")
    expect(owner.get_by_text(re.compile("Hidden by moderators: Spam: links to a scam shop"))).to_be_visible()
    screenshot(owner, "05-owner-sees-why")

    reporter.goto(f"{base}/moderation/my-reports/")
    expect(reporter.get_by_test_id("my-reports")).to_contain_text("Staff acted on it")
    screenshot(reporter, "06-reporter-sees-the-outcome")
