"""Uploading your own pictures into your gallery: the upload page and POST /api/v1/images/."""

import io
import zipfile

from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo
from rest_framework.test import APIClient

from gallery import services
from gallery.models import Image
from generation.diffusion import read_png_parameters
from ldmsite.accounts.tokens import create_token

A1111 = ("a star on a hill\nNegative prompt: blurry\nSteps: 30, Sampler: Euler a, CFG scale: 7, Seed: 99, "
         "Size: 48x40, Model: sd15")


def signed_in(user):
    client = Client()
    client.force_login(user)
    return client


def picture(kind="PNG", size=(48, 40), color=(10, 200, 30), parameters=None, mode="RGB") -> bytes:
    buffer = io.BytesIO()
    info = None
    if parameters:
        info = PngInfo()
        info.add_text("parameters", parameters)
    PILImage.new(mode, size, color).save(buffer, format=kind, pnginfo=info) if info else \
        PILImage.new(mode, size, color).save(buffer, format=kind)
    return buffer.getvalue()


def upload(name, data, content_type="application/octet-stream"):
    return SimpleUploadedFile(name, data, content_type=content_type)


def dataset_zip(entries: dict) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def test_uploaded_pictures_become_private_kept_images_captioned_from_png_parameters_or_the_caption_field(people):
    owner = people["owner"]
    response = signed_in(owner).post(reverse("gallery:upload"), {
        "files": [upload("star.png", picture(parameters=A1111)), upload("photo.jpg", picture("JPEG")),
                  upload("clip.webp", picture("WEBP", mode="RGBA", color=(0, 0, 0, 0)))],
        "caption": "my own drawing"})
    assert response.status_code == 302 and response["Location"] == reverse("gallery:history")
    images = {image.metadata["uploaded"]["name"]: image for image in Image.objects.filter(owner=owner)}
    assert set(images) == {"star.png", "photo.jpg", "clip.webp"}
    star = images["star.png"]
    assert star.prompt == "a star on a hill" and star.negative_prompt == "blurry" and star.parameters == A1111
    assert images["photo.jpg"].prompt == images["clip.webp"].prompt == "my own drawing"
    for image in images.values():
        assert (image.generation, image.model, image.seed) == (None, None, 0)
        assert image.visibility == "private" and image.saved and (image.width, image.height) == (48, 40)
        with image.file.open("rb") as handle:
            stored = PILImage.open(io.BytesIO(handle.read()))
            assert stored.format == "PNG" and stored.mode == "RGB"  # re-encoded, transparency flattened
        assert image.thumbnail
    with star.file.open("rb") as handle:  # the stored PNG still carries its parameters for PNG-info
        assert read_png_parameters(handle.read())["prompt"] == "a star on a hill"
    white = images["clip.webp"]
    with white.file.open("rb") as handle:
        assert PILImage.open(handle).convert("RGB").getpixel((0, 0)) == (255, 255, 255)
    history = signed_in(owner).get(reverse("gallery:history")).content.decode()
    assert reverse("gallery:upload") in history and f'data-image="{star.pk}"' in history
    page = signed_in(owner).get(star.get_absolute_url()).content.decode()
    assert "Uploaded" in page


def test_a_zip_of_pictures_with_txt_captions_goes_straight_into_your_album(people):
    owner = people["owner"]
    album = services.create_album(owner, "Stars")
    data = dataset_zip({"set/one.png": picture(), "set/one.txt": "zqstar, a star\n", "set/two.jpg": picture("JPEG"),
                        "set/notes.md": "ignored", "__MACOSX/set/._one.png": "junk"})
    response = signed_in(owner).post(reverse("gallery:upload"), {
        "files": [upload("stars.zip", data, "application/zip")], "album": str(album.pk), "caption": "a star"},
        HTTP_ACCEPT="application/json")
    assert response.status_code == 201, response.json()
    body = response.json()
    assert body["album"] == album.pk and len(body["images"]) == 2
    captions = dict(album.images.values_list("metadata__uploaded__name", "prompt"))
    assert captions == {"stars.zip/set/one.png": "zqstar, a star", "stars.zip/set/two.jpg": "a star"}


def test_bad_uploads_are_refused_naming_the_file_and_nothing_is_stored(people, settings):
    client = signed_in(people["owner"])
    gif = io.BytesIO()
    PILImage.new("RGB", (8, 8)).save(gif, format="GIF")
    cases = [
        ([upload("ok.png", picture()), upload("notes.png", b"not a picture")], "notes.png: is not a picture"),
        ([upload("anim.gif", gif.getvalue())], "anim.gif: must be a PNG, JPEG or WebP picture (got GIF)"),
        ([upload("huge.png", picture(size=(4097, 4097)))], "huge.png: is 4097x4097 pixels"),
        ([upload("empty.zip", dataset_zip({"readme.txt": "x"}))], "empty.zip: has no PNG, JPEG or WebP pictures"),
        ([], "choose at least one picture"),
    ]
    for files, message in cases:
        response = client.post(reverse("gallery:upload"), {"files": files}, HTTP_ACCEPT="application/json")
        assert response.status_code == 400 and message in response.json()["errors"]["files"], response.json()
    someone_elses = services.create_album(people["other"], "Theirs")
    response = client.post(reverse("gallery:upload"), {"files": [upload("ok.png", picture())],
                                                       "album": str(someone_elses.pk)})
    assert response.status_code == 400 and "is not one of your albums" in response.content.decode()
    assert not Image.objects.exists()
    stored = settings.MEDIA_ROOT / "images"
    assert not stored.exists() or not any(path.is_file() for path in stored.rglob("*"))


def test_the_api_uploads_pictures_as_the_token_owners_images(people):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {create_token(people['owner'], 't', ['read', 'write'])[1]}")
    response = client.post("/api/v1/images/", {"files": [upload("a.png", picture(parameters=A1111)),
                                                         upload("b.png", picture())], "caption": "plain"},
                           format="multipart")
    assert response.status_code == 201, response.json()
    images = response.json()["images"]
    assert [image["prompt"] for image in images] == ["a star on a hill", "plain"]
    assert all(image["generation"] is None and image["visibility"] == "private" for image in images)
    assert client.get(images[0]["file"]).status_code == 200
    assert client.post("/api/v1/images/", {"files": [upload("x.png", picture())], "colour": "red"},
                       format="multipart").json()["errors"]["colour"]
    assert client.post("/api/v1/images/", {"files": [upload("x.png", picture())], "album": str(10**30)},
                       format="multipart").json()["errors"]["album"]
    assert client.post("/api/v1/images/", {"files": ["not a file"]}, format="json").status_code == 400
    read_only = APIClient()
    read_only.credentials(HTTP_AUTHORIZATION=f"Bearer {create_token(people['owner'], 'r', ['read'])[1]}")
    assert read_only.post("/api/v1/images/", {"files": [upload("x.png", picture())]},
                          format="multipart").status_code == 403
