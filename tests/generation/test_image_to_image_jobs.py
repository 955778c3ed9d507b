"""Image-to-image jobs on the site side: the source pictures a submission carries (base64, data:
URL, bytes, an uploaded file, a gallery image, a job's own), checked before decoding, stored
privately with the job and deleted with it; the worker hands them to the engine; the pages' Remix,
"Use as input" and image page know where a picture came from."""

import base64
import io

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image as PILImage

from gallery.models import Image
from generation import sources
from generation.admission import Refusal
from generation.models import Generation
from generation.services import submit_generation
from tests.api.conftest import make_image
from tests.generation.conftest import run_queue

Status = Generation.Status
PROMPT = {"prompt": "a red circle", "steps": 3, "seed": 7, "width": 32, "height": 32}


def png(size=(32, 32), color=(200, 30, 30), mode="RGB") -> bytes:
    buffer = io.BytesIO()
    PILImage.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + b64(data)


def mask_png(size=(32, 32)) -> bytes:
    mask = PILImage.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))  # repaint the left half
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def stored_files() -> list[str]:
    try:
        folders = default_storage.listdir("sources")[0]
    except FileNotFoundError:
        return []
    return [name for folder in folders for name in default_storage.listdir(f"sources/{folder}")[1]]


def opened(stored) -> PILImage.Image:
    with stored.open("rb") as handle:
        picture = PILImage.open(handle)
        picture.load()
    return picture


def submit(owner, **fields):
    return submit_generation(owner, {**PROMPT, **fields})


# --- What a submission stores ---------------------------------------------------------------------

def test_an_init_image_in_base64_makes_an_img2img_job_that_keeps_the_picture_as_a_private_png(tiny_model, alice):
    job = submit(alice, init_image=b64(png((40, 24), (10, 200, 10))), denoising_strength=0.6)
    assert job.mode == "img2img" and job.params["denoising_strength"] == 0.6, "the mode is inferred"
    assert job.init_image.name.startswith("sources/") and job.init_image.name.endswith(".png")
    assert not job.mask and job.source_image is None
    picture = opened(job.init_image)
    assert picture.size == (40, 24) and picture.getpixel((3, 3)) == (10, 200, 10)


def test_a_data_url_init_image_and_a_mask_in_bytes_make_an_inpainting_job(tiny_model, alice):
    job = submit(alice, init_image=data_url(png()), mask=mask_png())
    assert job.mode == "inpaint"
    mask = opened(job.mask)
    assert mask.mode == "L" and mask.getpixel((2, 2)) == 255 and mask.getpixel((30, 2)) == 0


def test_an_uploaded_file_outpaints_and_the_transparent_part_of_a_picture_becomes_white(tiny_model, alice):
    upload = SimpleUploadedFile("source.png", png(mode="RGBA", color=(0, 0, 0, 0)), content_type="image/png")
    job = submit(alice, init_image=upload, mode="outpaint", outpaint_right=16)
    assert job.mode == "outpaint" and job.request.output_size == (48, 32)
    assert opened(job.init_image).getpixel((0, 0)) == (255, 255, 255)


def test_a_gallery_image_you_can_see_is_a_source_and_is_remembered(tiny_model, alice, bob):
    public = make_image(alice, visibility=Image.Visibility.PUBLIC, saved=True)
    job = submit(bob, source_image=str(public.pk))
    assert job.mode == "img2img" and job.source_image == public
    assert opened(job.init_image).size == (32, 32), "a copy is stored with the job"


def test_a_mask_carried_by_a_painted_transparent_layer_is_read_by_its_alpha(tiny_model, alice):
    layer = PILImage.new("RGBA", (32, 32), (0, 0, 0, 0))
    layer.paste((255, 0, 0, 255), (0, 0, 8, 32))
    buffer = io.BytesIO()
    layer.save(buffer, format="PNG")
    job = submit(alice, init_image=b64(png()), mask=b64(buffer.getvalue()))
    mask = opened(job.mask)
    assert mask.getpixel((2, 2)) == 255 and mask.getpixel((20, 2)) == 0


# --- What is refused, storing nothing ------------------------------------------------------------

def refused(owner, **fields) -> Refusal:
    jobs, files = Generation.objects.count(), stored_files()
    with pytest.raises(Refusal) as error:
        submit(owner, **fields)
    assert Generation.objects.count() == jobs, "a refused submission stores no job"
    assert stored_files() == files, "and no picture"
    return error.value


def test_a_file_that_is_not_an_image_is_refused_by_name(tiny_model, alice):
    refusal = refused(alice, init_image=b64(b"GIF89a but not really a picture"))
    assert set(refusal.errors) == {"init_image"} and "not an image" in refusal.errors["init_image"]
    refusal = refused(alice, init_image="this is not base64 at all!")
    assert "base64" in refusal.errors["init_image"]
    refusal = refused(alice, init_image={"not": "a picture"})
    assert set(refusal.errors) == {"init_image"}


def test_a_source_too_large_in_bytes_is_refused_before_it_is_decoded(tiny_model, alice, monkeypatch):
    monkeypatch.setattr(sources, "MAX_SOURCE_BYTES", 100)
    decoded = []
    monkeypatch.setattr(sources, "decode_picture", lambda *args: decoded.append(args))
    refusal = refused(alice, init_image=b64(png((64, 64), (1, 2, 3))))
    assert "larger than" in refusal.errors["init_image"]
    refusal = refused(alice, init_image=SimpleUploadedFile("big.png", b"x" * 101))
    assert "larger than" in refusal.errors["init_image"]
    assert decoded == [], "nothing was decoded"


def test_a_source_with_too_many_pixels_is_refused_from_its_header(tiny_model, alice):
    huge = png((4100, 4100), 0, mode="1")  # a few kB of PNG, 16.8 million pixels
    refusal = refused(alice, init_image=b64(huge))
    assert "4100x4100 pixels" in refusal.errors["init_image"]


def test_a_mask_of_another_size_than_the_init_image_is_refused(tiny_model, alice):
    refusal = refused(alice, init_image=b64(png((32, 32))), mask=b64(mask_png((16, 32))))
    assert refusal.errors == {"mask": "is 16x32 pixels; it must be the same size as the init image (32x32)"}


def test_a_denoising_strength_out_of_range_is_refused_with_the_pictures_own_errors(tiny_model, alice):
    refusal = refused(alice, init_image=b64(png()), mask="not a mask", denoising_strength=1.5)
    assert set(refusal.errors) == {"denoising_strength", "mask"}, "every bad field at once"
    assert "from 0 to 1" in refusal.errors["denoising_strength"]


def test_someone_elses_private_image_is_refused_as_if_it_did_not_exist(tiny_model, alice, bob):
    private = make_image(alice)
    refusal = refused(bob, source_image=private.pk)
    missing = refused(bob, source_image=10**12)
    assert refusal.errors == missing.errors == {"source_image": sources.NO_SUCH_IMAGE}
    assert set(refused(bob, source_image="²").errors) == {"source_image"}


def test_a_source_mode_needs_a_picture_and_text_to_image_takes_none(tiny_model, alice):
    assert set(refused(alice, mode="img2img").errors) == {"init_image"}
    assert set(refused(alice, mode="inpaint", init_image=b64(png())).errors) == {"mask"}
    assert set(refused(alice, mode="txt2img", init_image=b64(png())).errors) == {"init_image"}
    assert set(refused(alice, mode="img2img", init_image=b64(png()), mask=b64(mask_png())).errors) == {"mask"}
    assert set(refused(alice, init_image=b64(png()), source_image=1).errors) == {"source_image"}


def test_a_job_of_someone_else_is_no_source(tiny_model, alice, bob):
    job = submit(alice, init_image=b64(png()))
    assert refused(bob, source_job=job.pk).errors == {"source_job": sources.NO_SUCH_JOB}


# --- Deleting -------------------------------------------------------------------------------------

def test_deleting_a_job_or_its_owner_deletes_its_pictures(tiny_model, alice, django_capture_on_commit_callbacks):
    first = submit(alice, init_image=b64(png()), mask=b64(mask_png()))
    second = submit(alice, init_image=b64(png()))
    assert len(stored_files()) == 3
    with django_capture_on_commit_callbacks(execute=True):
        first.delete()
    assert len(stored_files()) == 1 and not default_storage.exists(first.init_image.name)
    with django_capture_on_commit_callbacks(execute=True):
        alice.delete()
    assert stored_files() == [] and not default_storage.exists(second.init_image.name)


# --- The worker -----------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_a_worker_runs_img2img_and_hires_jobs_to_images_of_their_output_size(tiny_model, alice, broker, worker):
    img2img = submit(alice, init_image=b64(png((48, 40), (20, 20, 220))), denoising_strength=0.7)
    hires = submit(alice, enable_hr=True, hr_scale=2, hr_second_pass_steps=2)
    run_queue(broker, worker)
    for job, size in ((img2img, (32, 32)), (hires, (64, 64))):
        job.refresh_from_db()
        assert job.status == Status.SUCCEEDED, job.error_detail
        [image] = Image.objects.filter(generation=job)
        assert (image.width, image.height) == size == job.request.output_size
        assert opened(image.file).size == size


# --- Pages: the source view, "Use as input", Remix, the image page --------------------------------

def test_the_source_pictures_are_for_the_owner_and_staff_only(client, tiny_model, alice, bob, staff):
    job = submit(alice, init_image=b64(png()), mask=b64(mask_png()))
    init, mask = reverse("generation:source", args=[job.pk, "init"]), job.source_url("mask")
    assert client.get(init).status_code == 302, "anonymous: to the login page"
    for person, expected in ((alice, 200), (staff, 200), (bob, 404)):
        client.force_login(person)
        for url in (init, mask):
            response = client.get(url)
            assert response.status_code == expected, (person, url)
            if expected == 200:
                assert response["Content-Type"] == "image/png"
                assert response["X-Content-Type-Options"] == "nosniff"
    client.force_login(alice)
    plain = submit(alice)
    assert client.get(plain.source_url("init")).status_code == 404
    assert client.get(f"/generate/jobs/{job.pk}/source/other/").status_code == 404


def test_the_generate_page_posts_an_uploaded_picture_and_mask(client, tiny_model, alice):
    client.force_login(alice)
    response = client.post(reverse("generation:generate"), {
        "model": "tiny", "prompt": "a red circle", "width": 32, "height": 32, "steps": 3, "guidance_scale": 5,
        "sampler": "Euler", "num_images": 1, "mode": "inpaint", "denoising_strength": "0.5", "mask_blur": "2",
        "init_image": SimpleUploadedFile("in.png", png(), content_type="image/png"),
        "mask": SimpleUploadedFile("mask.png", mask_png(), content_type="image/png")})
    job = Generation.objects.get()
    assert response.status_code == 302 and response["Location"] == job.get_absolute_url()
    assert job.mode == "inpaint" and job.params["denoising_strength"] == 0.5 and job.params["mask_blur"] == 2
    assert job.init_image and job.mask


def test_use_as_input_puts_an_image_you_can_see_on_the_generate_page(client, tiny_model, alice, bob):
    public = make_image(alice, visibility=Image.Visibility.PUBLIC, saved=True)
    private = make_image(alice)
    client.force_login(bob)
    response = client.get(reverse("generation:generate"), {"source_image": public.pk})
    assert response.context["source_image"] == public
    assert response.context["source_preview_url"] == public.file_url()
    response = client.get(reverse("generation:generate"), {"source_image": private.pk})
    assert response.context["source_image"] is None, "someone else's private image is not offered"


def test_remix_carries_the_source_the_job_started_from(client, tiny_model, alice, bob):
    public = make_image(alice, visibility=Image.Visibility.PUBLIC, saved=True)
    from_gallery = submit(alice, source_image=public.pk)
    uploaded = submit(alice, init_image=b64(png()), mask=b64(mask_png()))
    made = {job: make_image(alice, generation=job, visibility=Image.Visibility.PUBLIC, saved=True)
            for job in (from_gallery, uploaded)}
    client.force_login(alice)
    page = client.get(reverse("generation:generate"), {"remix": made[from_gallery].pk})
    assert page.context["source_image"] == public and page.context["source_job"] is None
    page = client.get(reverse("generation:generate"), {"remix": made[uploaded].pk})
    assert page.context["source_job"] == uploaded and page.context["source_mask_url"] == uploaded.source_url("mask")
    remixed = submit(alice, source_job=uploaded.pk)
    assert remixed.mode == "inpaint", "the mask came along"
    assert opened(remixed.init_image).tobytes() == opened(uploaded.init_image).tobytes()
    client.force_login(bob)
    page = client.get(reverse("generation:generate"), {"remix": made[uploaded].pk})
    assert page.context["source_job"] is None, "an uploaded source stays its owner's"


def test_the_image_page_links_a_gallery_source_and_shows_an_uploaded_one_to_its_owner_only(
        client, tiny_model, alice, bob):
    public = make_image(alice, visibility=Image.Visibility.PUBLIC, saved=True)
    from_gallery = submit(alice, source_image=public.pk)
    uploaded = submit(alice, init_image=b64(png()))
    results = {job: make_image(alice, generation=job, visibility=Image.Visibility.PUBLIC, saved=True)
               for job in (from_gallery, uploaded)}
    client.force_login(bob)
    source = client.get(results[from_gallery].get_absolute_url()).context["source"]
    assert source["image"] == public and source["page_url"] == public.get_absolute_url()
    assert source["init_url"] is None and source["file_url"] == public.file_url()
    assert client.get(results[uploaded].get_absolute_url()).context["source"] is None
    client.force_login(alice)
    source = client.get(results[uploaded].get_absolute_url()).context["source"]
    assert source["image"] is None and source["file_url"] == uploaded.source_url("init")
