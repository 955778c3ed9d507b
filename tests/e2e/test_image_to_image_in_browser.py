"""Image to image in a real browser with the built-in model: a mask painted with the mouse runs an
inpainting job; "Use as input" on an image page runs an img2img job from that image.

The inpaint mode is photographed at 1280 and 390 wide (test-artifacts/<test name>/), and the
page must not scroll sideways on the phone.
"""

import re

from PIL import Image as Picture
from PIL import ImageDraw
from playwright.sync_api import expect

from tests.conftest import manage
from tests.e2e.test_generate_in_browser import create_user, sign_in

# What the painted canvas holds and what the stored mask is: counted in the page (functions, not
# expression strings: the site's CSP has no 'unsafe-eval').
PAINTED_PIXELS = """() => {
  const canvas = document.getElementById('mask-canvas');
  const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
  let painted = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] > 127) painted += 1;
  return {painted, width: canvas.width, height: canvas.height};
}"""

STORED_MASK = """async (url) => {
  const response = await fetch(url, {credentials: 'same-origin'});
  if (!response.ok) return {status: response.status};
  const bitmap = await createImageBitmap(await response.blob());
  const canvas = document.createElement('canvas');
  canvas.width = bitmap.width; canvas.height = bitmap.height;
  const context = canvas.getContext('2d');
  context.drawImage(bitmap, 0, 0);
  const data = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
  let white = 0, black = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i] > 200 && data[i + 1] > 200 && data[i + 2] > 200) white += 1;
    else if (data[i] < 55 && data[i + 1] < 55 && data[i + 2] < 55) black += 1;
  }
  return {status: response.status, width: bitmap.width, height: bitmap.height, white, black};
}"""

NO_SIDEWAYS_SCROLL = "() => document.documentElement.scrollWidth"

# A published image made the way workers store them (no model runs), for "Use as input".
SEED_IMAGE = """
from django.contrib.auth.models import User
from PIL import Image as Picture, ImageDraw
from gallery import services
from generation.diffusion import format_parameters
from generation.diffusion.request import validate_request
from generation.models import DiffusionModel, Generation
from generation.outputs import store_generated_image
owner = User.objects.get(username="ines")
model = DiffusionModel.objects.get(slug="ldm-shapes")
request = validate_request({"prompt": "a large yellow circle in the center on a blue background", "seed": 3,
                            "width": 64, "height": 64, "steps": 20}, model.limits())
job = Generation.objects.create(owner=owner, model=model, params=request.to_dict(), status="succeeded")
picture = Picture.new("RGB", (64, 64), (40, 60, 200))
ImageDraw.Draw(picture).ellipse((16, 16, 48, 48), fill=(230, 210, 40))
metadata = {**request.to_dict(), "model": {"name": model.name}}
image = store_generated_image(job, 0, picture, metadata, format_parameters(metadata), 30.0)
services.set_image_visibility(image, "public")
print("IMAGE", image.pk)
"""


def source_png(path):
    """A 64x64 picture like the built-in model's dataset: a yellow circle on a blue background."""
    picture = Picture.new("RGB", (64, 64), (40, 60, 200))
    ImageDraw.Draw(picture).ellipse((16, 16, 48, 48), fill=(230, 210, 40))
    picture.save(path)
    return path


def test_a_mask_painted_with_the_mouse_inpaints_the_source(live_site, page, browser, screenshot, tmp_path):
    base = live_site["url"]
    create_user(live_site, "fern")
    sign_in(page, base, "fern")
    page.goto(base + "/generate/")
    expect(page.get_by_label("Text", exact=True)).to_be_checked()
    expect(page.locator("#id_enable_hr")).to_be_visible()  # the hires fix belongs to text to image
    expect(page.locator("#source-panel")).to_be_hidden()
    page.get_by_label("Inpaint", exact=True).check()
    expect(page.locator("#mask-tools")).to_be_visible()
    expect(page.locator("#id_enable_hr")).to_be_hidden()  # text-to-image only
    page.get_by_label("Source image", exact=True).set_input_files(str(source_png(tmp_path / "source.png")))
    canvas = page.locator("#mask-canvas")
    expect(canvas).to_be_visible()
    expect(page.locator("#source-caption")).to_contain_text("64×64")

    # Paint a stroke across the lower part of the picture (the background) with the mouse.
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.85)
    page.mouse.down()
    for step in range(1, 11):
        page.mouse.move(box["x"] + box["width"] * (0.1 + 0.08 * step), box["y"] + box["height"] * 0.85, steps=2)
    page.mouse.up()
    painted = page.evaluate(PAINTED_PIXELS)
    assert (painted["width"], painted["height"]) == (64, 64), "the mask is at the source's own size"
    assert 0 < painted["painted"] < 64 * 64 / 2, painted

    # Undo takes the stroke back; the brush paints it again.
    page.get_by_role("button", name="Undo").click()
    assert page.evaluate(PAINTED_PIXELS)["painted"] == 0
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()  # clicking Undo may have scrolled the page
    page.mouse.move(box["x"] + box["width"] * 0.1, box["y"] + box["height"] * 0.85)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.9, box["y"] + box["height"] * 0.85, steps=12)
    page.mouse.up()
    assert page.evaluate(PAINTED_PIXELS)["painted"] > 0

    page.get_by_label("Prompt", exact=True).fill("a large yellow circle in the center on a red background")
    page.get_by_label("Steps", exact=True).fill("6")
    page.get_by_label("Seed", exact=True).fill("5")
    screenshot(page, "inpaint-1280")
    page.set_viewport_size({"width": 390, "height": 844})
    page.wait_for_timeout(100)
    assert page.evaluate(NO_SIDEWAYS_SCROLL) <= 390, "the generate page scrolls sideways in inpaint mode at 390 px"
    screenshot(page, "inpaint-390")
    page.set_viewport_size({"width": 1280, "height": 900})

    # Outpaint: the steppers extend the canvas by 8 px a press, drawn around the source; back to
    # Inpaint, the painted mask is still there.
    page.get_by_label("Outpaint", exact=True).check()
    expect(canvas).to_be_hidden()
    for _ in range(2):
        page.get_by_role("button", name="Left: 8 pixels more").click()
    page.get_by_role("button", name="Top: 8 pixels more").click()
    expect(page.get_by_label("Left", exact=True)).to_have_value("16")
    expect(page.locator("#outpaint-size")).to_contain_text("80×72")
    screenshot(page, "outpaint-1280")
    page.get_by_label("Inpaint", exact=True).check()
    assert page.evaluate(PAINTED_PIXELS)["painted"] > 0

    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#job-status")).to_have_text("Done", timeout=120_000)
    result = page.locator("#results .result img")
    expect(result).to_have_count(1)
    page.wait_for_function("() => document.querySelector('#results img').complete", timeout=30_000)
    assert page.evaluate("document.querySelector('#results img').naturalWidth") == 64

    # The job kept the mask as painted: white where the stroke went, black elsewhere, 64x64.
    job = page.locator("#job-stack .job-card").first.get_attribute("data-job")
    mask = page.evaluate(STORED_MASK, f"/generate/jobs/{job}/source/mask/")
    assert mask["status"] == 200 and (mask["width"], mask["height"]) == (64, 64), mask
    assert mask["white"] > 0 and mask["black"] > mask["white"], mask
    screenshot(page, "inpaint-done")

    # "Use as input" on the result makes it the source in place, with a fresh mask.
    result_id = page.locator("#results .result").first.get_attribute("data-image")
    page.locator("#job-stack .job-card").first.get_by_role("link", name="Use as input").click()
    expect(page.locator("#source-caption")).to_contain_text(f"image {result_id}")
    assert page.locator("#id_source_image").input_value() == result_id
    assert page.evaluate(PAINTED_PIXELS)["painted"] == 0


def test_use_as_input_on_an_image_page_runs_image_to_image_from_it(live_site, page, screenshot):
    base = live_site["url"]
    create_user(live_site, "ines")
    seeded = manage(live_site["env"], "shell", "-c", SEED_IMAGE)
    assert seeded.returncode == 0, seeded.stderr
    words = seeded.stdout.split()
    image_id = words[words.index("IMAGE") + 1]
    sign_in(page, base, "ines")

    page.goto(f"{base}/images/{image_id}/")
    page.get_by_role("link", name="Use as input").click()
    expect(page).to_have_url(re.compile(rf"/generate/\?source_image={image_id}$"))
    expect(page.get_by_label("Image", exact=True)).to_be_checked()
    expect(page.locator("#source-preview")).to_be_visible()
    expect(page.locator("#source-caption")).to_contain_text(f"image {image_id}")
    assert page.locator("#id_source_image").input_value() == image_id
    page.wait_for_function("() => document.getElementById('source-preview').naturalWidth === 64")

    page.get_by_label("Prompt", exact=True).fill("a large red circle in the center on a blue background")
    page.get_by_label("Steps", exact=True).fill("6")
    page.get_by_label("Denoising strength", exact=True).fill("0.7")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#job-status")).to_have_text("Done", timeout=120_000)
    expect(page.locator("#results .result img")).to_have_count(1)
    screenshot(page, "img2img-done")

    # The new image's page shows the source beside it, linking to the image it came from.
    page.locator("#results .result a").first.click()
    source = page.get_by_test_id("image-source")
    expect(source).to_be_visible()
    expect(source.get_by_role("link", name=f"image {image_id}")).to_have_attribute("href", f"/images/{image_id}/")
    screenshot(page, "result-page")


# A picture pasted from the clipboard: a 48x32 PNG made in the page, pasted as a file.
PASTE_PICTURE = """async () => {
  const canvas = document.createElement('canvas');
  canvas.width = 48; canvas.height = 32;
  const context = canvas.getContext('2d');
  context.fillStyle = '#2040c0'; context.fillRect(0, 0, 48, 32);
  context.fillStyle = '#e0d030'; context.fillRect(16, 8, 16, 16);
  const blob = await new Promise((resolve) => canvas.toBlob(resolve, 'image/png'));
  const clipboard = new DataTransfer();
  clipboard.items.add(new File([blob], 'pasted.png', {type: 'image/png'}));
  document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: clipboard, bubbles: true, cancelable: true}));
}"""

STAGE_WIDTH = "() => document.getElementById('source-stage').getBoundingClientRect().width"


def test_on_a_phone_a_pasted_picture_is_painted_with_a_finger_and_zoomed_with_two(live_site, browser):
    base = live_site["url"]
    create_user(live_site, "gus")
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    sign_in(page, base, "gus")
    page.goto(base + "/generate/")
    page.evaluate(PASTE_PICTURE)
    expect(page.get_by_label("Image", exact=True)).to_be_checked()  # a picture switches text to image
    expect(page.locator("#source-caption")).to_contain_text("pasted.png · 48×32")
    expect(page.get_by_label("Width", exact=True)).to_have_value("48")
    page.get_by_label("Inpaint", exact=True).check()
    canvas = page.locator("#mask-canvas")
    canvas.scroll_into_view_if_needed()
    box = canvas.bounding_box()
    touch = context.new_cdp_session(page)

    def fingers(kind, *points):
        touch.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [
            {"x": box["x"] + box["width"] * x, "y": box["y"] + box["height"] * y, "id": n}
            for n, (x, y) in enumerate(points)]})

    fingers("touchStart", (0.2, 0.5))
    for step in range(1, 6):
        fingers("touchMove", (0.2 + 0.12 * step, 0.5))
    fingers("touchEnd")
    painted = page.evaluate(PAINTED_PIXELS)
    assert (painted["width"], painted["height"]) == (48, 32) and painted["painted"] > 0, painted

    before = page.evaluate(STAGE_WIDTH)
    fingers("touchStart", (0.4, 0.5), (0.6, 0.5))
    for step in range(1, 6):
        fingers("touchMove", (0.4 - 0.06 * step, 0.5), (0.6 + 0.06 * step, 0.5))
    fingers("touchEnd")
    assert page.evaluate(STAGE_WIDTH) > before * 1.5, "spreading two fingers zooms in"
    assert page.evaluate(PAINTED_PIXELS)["painted"] == painted["painted"], "a pinch paints nothing"
    assert page.evaluate(NO_SIDEWAYS_SCROLL) <= 390, "the zoomed picture scrolls inside its box, not the page"
    page.get_by_role("button", name="Fit to the column").click()
    assert abs(page.evaluate(STAGE_WIDTH) - before) < 1
    context.close()
