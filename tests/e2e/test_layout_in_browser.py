"""No page scrolls sideways on a phone.

Every page the browser suite visits (anonymous, signed in, staff) is opened at 390×844 and must be
no wider than the screen (document.documentElement.scrollWidth <= 390); each is photographed at 390
and at 1280 wide under test-artifacts/<this test>/ so a person can look at them.
"""

import re

from tests.conftest import manage
from tests.e2e.test_generate_in_browser import PASSWORD, sign_in

PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 800}

# Two people, one of them staff; published images (made the way workers make them, so no model runs),
# a job, an album, a like, a report, a token and a blocklist entry, so no page is only its empty state.
SEED = """
from django.contrib.auth.models import User
from PIL import Image as Picture
from gallery import services
from gallery.moderation import save_blocklist_entry
from gallery.moderation_models import BlocklistEntry
from generation.outputs import store_generated_image
from generation.diffusion import format_parameters
from generation.diffusion.request import validate_request
from generation.models import DiffusionModel, Generation
from ldmsite.accounts.tokens import create_token
pia = User.objects.create_user("pia", "pia@example.com", %(password)r, first_name="Pia Lindqvist")
stan = User.objects.create_user("stan", "stan@example.com", %(password)r, is_staff=True, is_superuser=True)
model = DiffusionModel.objects.get_or_create(slug="shapes", defaults=dict(
    name="Shapes", source="/nonexistent", default_width=64, default_height=64))[0]
images = []
for seed, (prompt, color) in enumerate([
        ("a very long prompt about a small red square on the left on a white background with "
         "extraordinarilylongunbrokenwordsthatcouldpushapageoutsideitsbox and more words", (220, 40, 40)),
        ("a calm green meadow under a blue sky", (40, 180, 60)),
        ("a yellow circle", (230, 200, 40))]):
    request = validate_request({"prompt": prompt, "seed": seed, "width": 64, "height": 64, "steps": 25,
                                "sampler": "DDIM"}, model.limits())
    job = Generation.objects.create(owner=pia, model=model, params=request.to_dict(), status="succeeded")
    metadata = {**request.to_dict(), "model": {"name": model.name}}
    image = store_generated_image(job, 0, Picture.new("RGB", (64, 64), color), metadata,
                                  format_parameters(metadata), 30.0)
    image.saved = True
    image.save()
    services.set_image_visibility(image, "public")
    images.append(image)
album = services.create_album(pia, "Shapes and colours", "Things I made")
services.add_to_album(album, images)
services.like_image(stan, images[0])
services.report_image(stan, images[1], "spam", "a report with a fairly long explanation of what is wrong")
create_token(pia, "render script", ["read", "generate"], None)
save_blocklist_entry(BlocklistEntry(pattern="forbiddenword", note="test entry"), stan)
print("IMAGE", images[0].pk, "JOB", images[0].generation_id, "ALBUM", album.pk)
"""

# The deepest elements that reach past the right edge of the screen, to name the culprit.
WIDEST = """() => [...document.querySelectorAll("body *")]
  .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 0.5)
  .filter((el) => ![...el.children].some((child) => child.getBoundingClientRect().right > window.innerWidth + 0.5))
  .slice(0, 4)
  .map((el) => `${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""}.${[...el.classList].join(".")}`
               + ` (${Math.round(el.getBoundingClientRect().right)}px)`)
  .join(", ")"""

ANONYMOUS = ["/", "/accounts/signup/", "/accounts/login/", "/accounts/password-reset/",
             "/accounts/password-reset/done/", "/accounts/reset/MQ/no-such-token/", "/accounts/reset/done/",
             "/explore/", "/u/pia/", "/api/docs/"]
PERSON = ["/", "/generate/", "/generations/", "/generations/{job}/", "/images/", "/images/{image}/",
          "/albums/", "/albums/{album}/", "/explore/", "/u/pia/", "/accounts/profile/", "/accounts/tokens/",
          "/accounts/password/", "/moderation/my-reports/", "/api/docs/"]
STAFF = ["/images/{image}/", "/moderation/", "/moderation/images/{image}/", "/moderation/people/pia/",
         "/moderation/audit/", "/moderation/blocklist/", "/workers/", "/admin/"]


def label_for(who: str, path: str) -> str:
    return who + "-" + (re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-") or "home")


def test_no_page_scrolls_sideways_at_390_px(live_site, browser, screenshot):
    base = live_site["url"]
    result = manage(live_site["env"], "shell", "-c", SEED % {"password": PASSWORD})
    assert result.returncode == 0, result.stderr
    words = result.stdout.split()
    ids = {"image": words[words.index("IMAGE") + 1], "job": words[words.index("JOB") + 1],
           "album": words[words.index("ALBUM") + 1]}

    too_wide = []
    for who, paths in (("anonymous", ANONYMOUS), ("person", PERSON), ("staff", STAFF)):
        for viewport, suffix in ((PHONE, "390"), (DESKTOP, "1280")):
            context = browser.new_context(viewport=viewport, is_mobile=viewport is PHONE)
            page = context.new_page()
            page.set_default_timeout(20_000)
            if who != "anonymous":
                sign_in(page, base, "pia" if who == "person" else "stan")
            for path in paths:
                url = path.format(**ids)
                response = page.goto(base + url)
                assert response.status == 200, (who, url, response.status)
                page.wait_for_load_state("networkidle")
                if viewport is PHONE:
                    width = page.evaluate("document.documentElement.scrollWidth")
                    if width > PHONE["width"]:
                        too_wide.append(f"{who} {url}: {width}px, widest: {page.evaluate(WIDEST)}")
                screenshot(page, f"{label_for(who, url)}-{suffix}")
            context.close()
    assert not too_wide, "pages that scroll sideways at 390 px:\n" + "\n".join(too_wide)
