"""The generate loop a person feels (issue 25): the job you start is in view and visibly moves, at
desktop and phone width; several jobs at once; the job page is live; a signed-out submit says so."""

import re

import pytest
from playwright.sync_api import expect

from tests.conftest import ARTIFACTS
from tests.e2e.test_generate_in_browser import create_user, sign_in

# Records every state the newest job card passes through, from before it exists.
WATCH_STATES = """() => {
  window.seenStates = [];
  const stack = document.getElementById('job-stack');
  const note = () => {
    const card = stack.querySelector('.job-card');
    if (!card) return;
    const preview = card.querySelector('.job-preview');
    const label = card.dataset.status + (card.dataset.status === 'running' && !preview.hidden && preview.src ? '+preview' : '');
    if (window.seenStates[window.seenStates.length - 1] !== label) window.seenStates.push(label);
  };
  new MutationObserver(note).observe(stack, {subtree: true, childList: true, attributes: true,
                                             attributeFilter: ['data-status', 'src', 'hidden']});
}"""

# Whether every element matching the selector is inside the window (no scrolling needed to see it),
# and below the site's sticky top bar, which would hide it.
IN_VIEW = """(selector) => {
  const elements = [...document.querySelectorAll(selector)];
  const top = document.querySelector('.topbar').getBoundingClientRect().bottom;
  return elements.length > 0 && elements.every((el) => {
    const box = el.getBoundingClientRect();
    return box.width > 0 && box.height > 0 && box.top >= top && box.left >= 0
      && box.bottom <= window.innerHeight && box.right <= window.innerWidth;
  });
}"""

RUNNING_WITH_PREVIEW_IN_VIEW = """() => {
  const card = document.querySelector('#job-stack .job-card');
  if (!card || card.dataset.status !== 'running') return false;
  const preview = card.querySelector('.job-preview');
  if (preview.hidden || !preview.complete || !preview.naturalWidth) return false;
  const top = document.querySelector('.topbar').getBoundingClientRect().bottom;
  return [card.querySelector('.job-state'), card.querySelector('.job-cancel'), preview].every((el) => {
    const box = el.getBoundingClientRect();
    return box.top >= top && box.bottom <= window.innerHeight && box.left >= 0 && box.right <= window.innerWidth;
  });
}"""


def open_generate_page(browser, live_site, username, width, height):
    context = browser.new_context(viewport={"width": width, "height": height})
    page = context.new_page()
    page.set_default_timeout(30_000)
    create_user(live_site, username)
    sign_in(page, live_site["url"], username)
    page.goto(live_site["url"] + "/generate/")
    expect(page.get_by_label("Model")).to_contain_text("ldm-shapes (built-in)")
    return context, page


@pytest.fixture
def window_shot(request):
    """A screenshot of the window only (what a person sees without scrolling), under
    test-artifacts/<test name>/<label>.png."""
    folder = ARTIFACTS / request.node.name
    folder.mkdir(parents=True, exist_ok=True)

    def take(page, label):
        page.screenshot(path=str(folder / f"{label}.png"), full_page=False)

    return take


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)], ids=["desktop", "phone"])
def test_the_job_you_start_is_in_view_and_moves_from_queued_to_the_image(live_site, browser, screenshot, window_shot, width, height):
    context, page = open_generate_page(browser, live_site, f"kim{width}", width, height)
    page.get_by_label("Prompt", exact=True).fill("a large yellow circle in the center on a blue background")
    page.get_by_label("Steps", exact=True).fill("40")
    page.get_by_label("Seed", exact=True).fill("11")
    page.evaluate(WATCH_STATES)
    page.get_by_role("button", name="Generate").click()
    # From here on the test never scrolls: what it checks must be inside the window.
    page.wait_for_function(RUNNING_WITH_PREVIEW_IN_VIEW, timeout=120_000)
    expect(page.locator("#job-stack .job-card .job-detail").first).to_contain_text(re.compile(r"step \d+ of 40"))
    window_shot(page, "01-running-window")
    expect(page.locator("#job-status")).to_have_text("Done", timeout=120_000)
    page.wait_for_function("() => document.querySelector('#results img').complete", timeout=30_000)
    assert page.evaluate(IN_VIEW, "#results img"), "the image is in view"
    assert page.evaluate(IN_VIEW, "#job-stack > article:first-of-type .job-actions"), "its actions are in view"
    states = page.evaluate("window.seenStates")
    assert states[0] in ("queued", "loading"), states
    assert "running+preview" in states and states[-1] == "succeeded", states
    # The image is at least as large as the preview was, and Save / Download / Remix sit in one row.
    image = page.locator("#results img").bounding_box()
    assert image["width"] >= min(256, width - 80), image
    tops = {round(page.get_by_role(kind, name=name).first.bounding_box()["y"])
            for kind, name in (("button", "Save"), ("link", "Download"), ("link", "Remix"))}
    assert len(tops) == 1, f"the result actions are in one row: {tops}"
    window_shot(page, "02-done-window")
    screenshot(page, "03-done-full-page")
    context.close()


def test_three_jobs_started_at_once_all_show_their_results(live_site, browser, window_shot):
    context, page = open_generate_page(browser, live_site, "lena", 1280, 800)
    page.get_by_label("Steps", exact=True).fill("8")
    for prompt in ("a red square", "a green circle", "a blue triangle"):
        page.get_by_label("Prompt", exact=True).fill(prompt)
        page.get_by_role("button", name="Generate").click()
        expect(page.locator("#job-stack .job-card .job-prompt", has_text=prompt)).to_be_visible()
    cards = page.locator("#job-stack .job-card")
    expect(cards).to_have_count(3)
    for index in range(3):
        expect(cards.nth(index)).to_have_attribute("data-status", "succeeded", timeout=120_000)
        expect(cards.nth(index).locator(".job-results img")).to_have_count(1)
    prompts = [text.strip() for text in cards.locator(".job-prompt").all_inner_texts()]
    assert prompts == ["a blue triangle", "a green circle", "a red square"], "newest first"
    ids = [int(card) for card in cards.evaluate_all("(cards) => cards.map((c) => c.dataset.job)")]
    assert ids == sorted(ids, reverse=True)
    window_shot(page, "01-three-done")
    context.close()


def test_a_signed_out_submit_says_so_and_links_to_the_login(live_site, browser, window_shot):
    context, page = open_generate_page(browser, live_site, "milo", 1280, 800)
    # Signed out in another tab: this page still shows the form.
    other = context.new_page()
    other.goto(live_site["url"] + "/")
    other.get_by_test_id("account-menu").click()
    other.get_by_role("button", name="Log out").click()
    expect(other.get_by_role("link", name="Log in").first).to_be_visible()
    other.close()

    page.get_by_label("Prompt", exact=True).fill("a red square")
    page.get_by_role("button", name="Generate").click()
    errors = page.locator("#form-errors")
    expect(errors).to_contain_text("You are signed out, so the job was not started")
    link = errors.get_by_role("link", name="Log in again")
    expect(link).to_have_attribute("href", "/accounts/login/?next=/generate/")
    assert page.evaluate(IN_VIEW, "#form-errors a"), "the message is in view"
    expect(page.locator("#job-stack .job-card")).to_have_count(0)
    window_shot(page, "01-signed-out")
    link.click()
    page.get_by_label("Username").fill("milo")
    page.get_by_label("Password").fill("amber-meadow-5172")
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(live_site["url"] + "/generate/")
    context.close()


def test_the_job_page_updates_live_and_shows_the_parameters(live_site, browser, window_shot):
    context, page = open_generate_page(browser, live_site, "nora", 1280, 800)
    page.get_by_label("Prompt", exact=True).fill("a large yellow circle in the center on a blue background")
    page.get_by_label("Steps", exact=True).fill("60")
    page.get_by_label("Seed", exact=True).fill("23")
    page.get_by_role("button", name="Generate").click()
    link = page.locator("#job-stack .job-card .job-prompt a")
    expect(link).to_be_visible()
    link.click()
    expect(page).to_have_url(re.compile(r"/generations/\d+/$"))
    parameters = page.locator(".job-parameters")
    expect(parameters).to_contain_text("Steps")
    expect(parameters).to_contain_text("60")
    expect(parameters).to_contain_text("23")
    expect(parameters).to_contain_text("64×64")
    # Live: the state moves on without a reload, to the image with its actions.
    expect(page.get_by_test_id("job-status")).to_have_text("Succeeded", timeout=120_000)
    expect(page.locator("#job-stack .job-results img")).to_have_count(1)
    expect(page.locator("#job-stack").get_by_role("button", name="Save")).to_be_visible()
    expect(page.locator("#job-static")).to_be_hidden()
    window_shot(page, "01-job-page-done")
    context.close()
