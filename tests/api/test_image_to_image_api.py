"""POST /api/v1/generations/ with a source picture: base64 in JSON, file parts in multipart, or a
gallery image by id; the job shows its mode and links to its stored pictures (the owner's and
staff's only); a bad source is a 400 naming the field and stores nothing."""

import base64
import io

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from PIL import Image as PILImage

from gallery.models import Image
from generation import api as generation_api
from generation import sources
from generation.models import Generation
from tests.api.conftest import client_for, make_image, png_bytes

BASE = {"prompt": "a red circle", "steps": 3, "width": 32, "height": 32}


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def mask_bytes(size=(32, 32)) -> bytes:
    mask = PILImage.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))
    buffer = io.BytesIO()
    mask.save(buffer, format="PNG")
    return buffer.getvalue()


def picture(response) -> PILImage.Image:
    opened = PILImage.open(io.BytesIO(b"".join(response.streaming_content)))
    opened.load()
    return opened


def test_an_img2img_job_in_json_with_a_base64_picture_shows_its_mode_and_source(tiny_model, alice):
    client = client_for(alice)
    response = client.post("/api/v1/generations/", {**BASE, "init_image": b64(png_bytes((40, 24))),
                                                    "denoising_strength": 0.6}, format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["mode"] == "img2img" and body["params"]["denoising_strength"] == 0.6
    assert body["source"]["image"] is None and body["source"]["mask"] is None
    stored = client.get(body["source"]["init_image"])
    assert stored.status_code == 200 and stored["Content-Type"] == "image/png"
    assert picture(stored).size == (40, 24)
    job = Generation.objects.get(pk=body["id"])
    assert job.init_image and job.mode == "img2img"


def test_an_inpainting_job_sends_its_picture_and_mask_as_multipart_file_parts(tiny_model, alice):
    client = client_for(alice)
    response = client.post("/api/v1/generations/", {
        **BASE, "mask_blur": "2", "inpainting_fill": "1",
        "init_image": SimpleUploadedFile("in.png", png_bytes(), content_type="image/png"),
        "mask": SimpleUploadedFile("mask.png", mask_bytes(), content_type="image/png")}, format="multipart")
    assert response.status_code == 202, response.json()
    body = response.json()
    assert body["mode"] == "inpaint" and body["params"]["mask_blur"] == 2 and body["params"]["steps"] == 3
    mask = picture(client.get(body["source"]["mask"]))
    assert mask.mode == "L" and mask.getpixel((1, 1)) == 255


def test_an_outpainting_job_and_a_hires_job_go_through_the_same_endpoint(tiny_model, alice):
    client = client_for(alice)
    outpaint = client.post("/api/v1/generations/", {**BASE, "mode": "outpaint", "outpaint_left": 16,
                                                    "init_image": "data:image/png;base64," + b64(png_bytes())},
                           format="json")
    assert outpaint.status_code == 202, outpaint.json()
    assert outpaint.json()["mode"] == "outpaint"
    hires = client.post("/api/v1/generations/", {**BASE, "enable_hr": True, "hr_scale": 2}, format="json")
    assert hires.status_code == 202 and hires.json()["mode"] == "txt2img" and hires.json()["source"] is None


def test_a_gallery_image_you_can_see_is_a_source_by_its_id(tiny_model, alice, bob):
    public = make_image(alice, visibility=Image.Visibility.PUBLIC, saved=True)
    response = client_for(bob).post("/api/v1/generations/", {**BASE, "source_image": public.pk}, format="json")
    assert response.status_code == 202, response.json()
    source = response.json()["source"]
    assert source["image"] == public.pk and source["image_url"] == f"/api/v1/images/{public.pk}/"


@pytest.mark.parametrize("fields, field, words", [
    ({"init_image": b64(b"%PDF-1.4 not a picture")}, "init_image", "not an image"),
    ({"init_image": "data:text/plain,hello"}, "init_image", "data: URL"),
    ({"init_image": b64(png_bytes()), "mask": b64(mask_bytes((16, 16)))}, "mask", "same size"),
    ({"init_image": b64(png_bytes()), "denoising_strength": 1.5}, "denoising_strength", "from 0 to 1"),
    ({"mode": "inpaint", "init_image": b64(png_bytes())}, "mask", "required"),
    ({"mode": "img2img"}, "init_image", "required"),
    ({"source_image": "{private}"}, "source_image", "you can see"),
    ({"source_image": [1]}, "source_image", "id"),
], ids=["not-an-image", "not-base64", "mask-size", "strength-1.5", "inpaint-without-mask", "img2img-without-picture",
        "someone-elses-private-image", "source-image-not-an-id"])
def test_a_bad_source_is_a_400_naming_the_field_and_stores_nothing(tiny_model, alice, bob, fields, field, words):
    private = make_image(alice)
    fields = {key: private.pk if value == "{private}" else value for key, value in fields.items()}
    response = client_for(bob).post("/api/v1/generations/", {**BASE, **fields}, format="json")
    assert response.status_code == 400
    assert words in response.json()["errors"][field]
    assert Generation.objects.count() == 0


def test_a_picture_too_large_is_refused_by_name_before_it_is_decoded(tiny_model, alice, monkeypatch):
    monkeypatch.setattr(sources, "MAX_SOURCE_BYTES", 1000)
    monkeypatch.setattr(sources, "decode_picture", lambda *args: pytest.fail("decoded a picture that is too large"))
    client = client_for(alice)
    big = png_bytes((200, 200), (1, 2, 3)) + b"\0" * 1000
    for body, form in (({**BASE, "init_image": b64(big)}, "json"),
                       ({**BASE, "init_image": SimpleUploadedFile("big.png", big)}, "multipart")):
        response = client.post("/api/v1/generations/", body, format=form)
        assert response.status_code == 400 and "larger than" in response.json()["errors"]["init_image"]
    assert Generation.objects.count() == 0


def test_a_multipart_body_over_the_limit_is_a_413_before_it_is_read(tiny_model, alice, monkeypatch):
    monkeypatch.setattr(generation_api, "MAX_SUBMISSION_BYTES", 10_000)
    response = client_for(alice).post("/api/v1/generations/", {
        **BASE, "init_image": SimpleUploadedFile("in.png", b"\0" * 20_000)}, format="multipart")
    assert response.status_code == 413 and "larger than" in response.json()["detail"]
    assert Generation.objects.count() == 0


def test_the_stored_pictures_of_a_job_are_its_owners_and_staffs_only(tiny_model, alice, bob, staff):
    job_url = client_for(alice).post("/api/v1/generations/", {**BASE, "init_image": b64(png_bytes())},
                                     format="json").json()["url"]
    job_id = job_url.rstrip("/").rsplit("/", 1)[1]
    for kind, owner_status in (("init", 200), ("mask", 404), ("other", 404)):
        url = f"/api/v1/generations/{job_id}/source/{kind}/"
        got = tuple(client_for(person).get(url).status_code for person in (alice, bob, None, staff))
        assert got == (owner_status, 404, 401, owner_status), (kind, got)


def test_the_schema_describes_the_image_fields_and_the_multipart_body(client):
    schema = client.get("/api/schema/?format=json").json()
    post = schema["paths"]["/api/v1/generations/"]["post"]
    assert {"application/json", "multipart/form-data"} <= set(post["requestBody"]["content"])
    fields = schema["components"]["schemas"]["GenerationRequestRequest"]["properties"]
    for name in ("mode", "init_image", "mask", "source_image", "denoising_strength", "inpainting_fill",
                 "outpaint_left", "enable_hr", "hr_upscaler"):
        assert name in fields, name
    upload = schema["components"]["schemas"]["GenerationUploadRequest"]["properties"]
    assert upload["init_image"]["format"] == "binary"
    assert "/api/v1/generations/{id}/source/{kind}/" in schema["paths"]
