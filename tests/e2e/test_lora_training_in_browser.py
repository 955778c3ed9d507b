"""Training a LoRA in a real browser on the built-in model: from an album of uploaded plus signs,
the loss curve and the sample grid update live, then the LoRA is used by name on /generate/ and the PNG
records it."""

from playwright.sync_api import expect

from tests.conftest import manage
from tests.e2e.test_generate_in_browser import create_user, sign_in


def plus_zip(path, count: int = 12):
    """Rendered plus signs (the procedural dataset's opt-in shape) as PNGs with same-named .txt
    captions in a zip, as LoRA datasets come."""
    import io
    import zipfile

    from PIL import Image

    from generation.diffusion import dataset

    images, specs = dataset.generate(count, 0, {"shape": "plus"})
    with zipfile.ZipFile(path, "w") as archive:
        for index, (picture, spec) in enumerate(zip(images, specs)):
            buffer = io.BytesIO()
            Image.fromarray(picture).save(buffer, format="PNG")
            archive.writestr(f"plus_{index:03d}.png", buffer.getvalue())
            archive.writestr(f"plus_{index:03d}.txt", dataset.caption(spec.attributes()))
    return path


LATEST_PARAMETERS = "from gallery.models import Image; print(Image.objects.latest('id').parameters)"


def test_a_person_trains_a_lora_watches_it_learn_and_generates_with_it(live_site, page, screenshot, tmp_path):
    base = live_site["url"]
    create_user(live_site, "lora")
    sign_in(page, base, "lora")
    # An album of the person's own pictures: made and filled through the gallery's pages.
    page.goto(base + "/albums/")
    page.get_by_label("Album title").fill("Plus signs")
    page.get_by_role("button", name="Create album").click()
    page.goto(base + "/images/upload/")
    page.get_by_label("Pictures or zips").set_input_files(str(plus_zip(tmp_path / "pluses.zip")))
    page.get_by_label("Album", exact=True).select_option(label="Plus signs")
    page.get_by_role("button", name="Upload").click()
    expect(page.get_by_text("Uploaded 12 images")).to_be_visible()

    page.goto(base + "/loras/")
    page.get_by_test_id("train-lora-link").click()
    page.get_by_label("Album", exact=True).select_option(label="Plus signs")
    page.get_by_label("LoRA name", exact=True).fill("plsgn")
    page.get_by_label("Trigger word", exact=True).fill("plsgn")
    page.get_by_label("Steps", exact=True).fill("120")
    page.get_by_role("button", name="Start training").click()

    # Live: the curve gains points and the sample grid arrives while the training runs.
    expect(page.get_by_test_id("training-status")).to_have_text("Running", timeout=60_000)
    page.wait_for_function("() => Number(document.getElementById('loss-chart').dataset.points || 0) >= 5",
                           timeout=120_000)
    page.wait_for_function("() => (document.getElementById('training-samples').src || '').startsWith('data:')",
                           timeout=120_000)
    screenshot(page, "01-training")
    expect(page.get_by_test_id("training-status")).to_have_text("Succeeded", timeout=240_000)
    expect(page.get_by_test_id("training-result")).to_contain_text("<lora:plsgn:1>")
    expect(page.get_by_text("12 from album")).to_be_visible()
    expect(page.get_by_test_id("training-progress")).to_have_text("step 120 of 120")
    assert page.evaluate("() => Number(document.getElementById('loss-chart').dataset.points)") >= 10
    screenshot(page, "02-trained")

    page.goto(base + "/generate/")
    page.get_by_label("Prompt", exact=True).fill("plsgn, a large red plus in the center <lora:plsgn:1>")
    page.get_by_label("Steps", exact=True).fill("20")
    page.get_by_role("button", name="Generate").click()
    expect(page.locator("#job-status")).to_have_text("Done", timeout=120_000)
    screenshot(page, "03-generated-with-the-lora")
    parameters = manage(live_site["env"], "shell", "-c", LATEST_PARAMETERS)
    assert parameters.returncode == 0, parameters.stderr
    assert "<lora:plsgn:1>" in parameters.stdout and 'Lora hashes: "plsgn: ' in parameters.stdout
