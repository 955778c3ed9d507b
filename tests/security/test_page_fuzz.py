"""Property-based: arbitrary form data posted to every page form (ldmsite/urls.py,
generation/urls.py, gallery/urls.py, gallery/moderation_urls.py, ldmsite/accounts/urls.py) and
arbitrary queries to the pages that read one never get a 5xx -- as a signed-in owner, as staff
for moderation, anonymously for sign-up and login. A page form that a script posts with
``Accept: application/json`` answers refused input with ``{"errors": {field: …}}``.

Bounded and derandomised (`FUZZ` in conftest); every field also gets each of `SWEEP_TEXT` once.
The Django admin (/admin/) is Django's own and staff-only; it is not fuzzed here.
"""

from __future__ import annotations

import io
import json

import pytest
from django.test import Client
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image as PILImage
from PIL.PngImagePlugin import PngInfo

from gallery.models import Album, AlbumItem, Report
from gallery.moderation_models import BlocklistEntry, FlaggedPrompt
from generation.models import Generation, LoraTraining
from ldmsite.accounts.tokens import create_token
from tests.api.conftest import make_image
from tests.security.conftest import FUZZ, signed_in
from tests.security.strategies import HOSTILE_TEXT, SWEEP_TEXT, form_data, query_params

GENERATE_FIELDS = ("model", "prompt", "negative_prompt", "width", "height", "steps", "guidance_scale",
                   "autoguidance_scale", "sampler", "seed", "num_images", "eta", "clip_guidance", "clip_guidance_scale",
                   "clip_guidance_every", "clip_cutouts", "mode", "init_image", "mask", "source_image", "source_job",
                   "denoising_strength", "outpaint_right", "enable_hr", "hr_scale")
BLOCKLIST_FIELDS = ("pattern", "kind", "whole_word", "action", "check_negative_prompt", "enabled", "note")


class Objects(dict):
    """What a path template names, made when it is named: ``{private}``, ``{fresh_album}``…
    Objects a post may delete (``fresh_…``) are made afresh for each post."""

    def __init__(self, context):
        super().__init__()
        self.context = context

    def __missing__(self, key):
        c, owner = self.context, self.context["people"]["owner"]
        if key == "fresh_image":
            return make_image(owner, prompt="a throwaway circle", visibility="public").pk
        if key == "fresh_album":
            album = Album.objects.create(owner=owner, title="Throwaway", visibility="public")
            for position, image in enumerate((c["things"]["public"], c["things"]["private"]), start=1):
                AlbumItem.objects.create(album=album, image=image, position=position)
            return album.pk
        if key == "training":
            return LoraTraining.objects.create(owner=owner, base_model=c["job"].model, name="fuzzed", trigger="t",
                                               rank=8, steps=10, learning_rate=1e-3, batch_size=8).pk
        if key == "fresh_entry":
            return BlocklistEntry.objects.create(pattern=c["counter"]()).pk
        if key in c["things"]:
            return c["things"][key].pk
        return c[key].pk


# (who posts, path, the fields its form has): every page POST of the five URL modules.
PAGE_POSTS = [
    ("owner", "/generate/", GENERATE_FIELDS),
    ("owner", "/generations/{job}/cancel/", ()),
    ("owner", "/images/add-to-album/", ("images", "album", "new_title", "next")),
    ("owner", "/images/{private}/save/", ("saved", "next")),
    ("owner", "/images/{private}/visibility/", ("visibility", "next")),
    ("owner", "/images/{fresh_image}/delete/", ()),
    ("owner", "/images/{theirs}/like/", ("like", "next")),
    ("owner", "/images/{theirs}/report/", ("reason", "text", "next")),
    ("owner", "/albums/new/", ("title", "description", "visibility")),
    ("owner", "/loras/train/", ("source", "album", "name", "trigger", "base_model", "rank", "steps",
                                "learning_rate", "batch_size", "seed")),
    ("owner", "/loras/trainings/{training}/cancel/", ()),
    ("owner", "/albums/{fresh_album}/edit/", ("action", "title", "description", "visibility", "cover", "images",
                                              "image", "direction", "next")),
    ("owner", "/accounts/profile/", ("first_name", "email")),
    ("owner", "/accounts/password/", ("old_password", "new_password1", "new_password2")),
    ("owner", "/accounts/tokens/", ("name", "scopes", "expires_in")),
    ("owner", "/accounts/tokens/{token}/revoke/", ()),
    ("owner", "/accounts/logout/", ()),
    ("anonymous", "/accounts/signup/", ("username", "email", "password1", "password2")),
    ("anonymous", "/accounts/login/", ("username", "password", "next")),
    ("staff", "/moderation/images/{theirs}/hide/", ("reason", "next")),
    ("staff", "/moderation/images/{theirs}/unhide/", ("reason", "next")),
    ("staff", "/moderation/images/{fresh_image}/delete/", ("reason", "next")),
    ("staff", "/moderation/images/{theirs}/dismiss/", ("reason", "next")),
    ("staff", "/moderation/images/{theirs}/clear/", ("reason", "next")),
    ("staff", "/moderation/people/oscar/suspend/", ("reason", "next")),
    ("staff", "/moderation/people/oscar/unsuspend/", ("reason", "next")),
    ("staff", "/moderation/people/oscar/note/", ("text", "image", "next")),
    ("staff", "/moderation/flagged/{flagged}/dismiss/", ("reason", "next")),
    ("staff", "/moderation/blocklist/", BLOCKLIST_FIELDS),
    ("staff", "/moderation/blocklist/{entry}/", BLOCKLIST_FIELDS),
    ("staff", "/moderation/blocklist/{fresh_entry}/delete/", ()),
]
# Pages that read a query (GET).
PAGE_QUERIES = [
    ("owner", "/generate/", ("remix", "source_image")),
    ("owner", "/generations/", ("page",)),
    ("owner", "/images/", ("saved", "page")),
    ("anonymous", "/explore/", ("order", "q", "model", "cursor")),
    ("anonymous", "/u/olive/", ("page",)),
    ("anonymous", "/albums/{album}/", ()),
    ("staff", "/moderation/", ("tab", "order", "page")),
    ("staff", "/moderation/audit/", ("action", "via", "person", "page")),
    ("owner", "/moderation/my-reports/", ("page",)),
    ("staff", "/workers/", ()),
]
# Page forms that answer a script (Accept: application/json) with field-named errors.
JSON_FORMS = ("/generate/", "/images/add-to-album/", "/edit/")


@pytest.fixture
def context(people, things, model):
    owner, other = people["owner"], people["other"]
    job = Generation.objects.create(owner=owner, model=model, params={"prompt": "a red circle", "num_images": 1})
    token, _ = create_token(owner, "fuzzed", ["read"])
    Report.objects.create(reporter=owner, image=things["theirs"], reason="spam")
    flagged = FlaggedPrompt.objects.create(user=other, prompt="a bad word", pattern="bad", matched="bad")
    entry = BlocklistEntry.objects.create(pattern="forbidden")
    numbers = iter(range(10 ** 9))
    return {"people": people, "things": things, "job": job, "token": token, "flagged": flagged, "entry": entry,
            "counter": lambda: f"entry{next(numbers)}"}


def client_as(who: str, context) -> Client:
    return Client() if who == "anonymous" else signed_in(context["people"][who])


def url_of(path: str, context) -> str:
    return path.format_map(Objects(context))


def check(response, path: str, as_json: bool) -> None:
    """No 5xx; a page form that answers scripts names the refused fields."""
    status = response.status_code
    assert status < 500, (path, status, response.content[:300])
    if as_json and 400 <= status < 500 and status != 404 and any(part in path for part in JSON_FORMS):
        errors = response.json()["errors"]
        assert errors and all(isinstance(name, str) and isinstance(message, str) for name, message in errors.items())


def post_everything(who, path, fields, context) -> None:
    @FUZZ
    @given(data=form_data(fields), as_json=st.booleans())
    def run(data, as_json):
        url = url_of(path, context)
        headers = {"HTTP_ACCEPT": "application/json"} if as_json else {}
        check(client_as(who, context).post(url, data, **headers), url, as_json)

    run()
    for field in fields:  # each field, once with each hostile value, the others absent: as a page, and
        for value in SWEEP_TEXT:  # as a script where the form answers scripts too
            for as_json in (False, True) if path.endswith(JSON_FORMS) else (False,):
                url = url_of(path, context)
                headers = {"HTTP_ACCEPT": "application/json"} if as_json else {}
                check(client_as(who, context).post(url, {field: value}, **headers), url, as_json)


@pytest.mark.parametrize("who, path, fields", PAGE_POSTS,
                         ids=[f"{who} POST {path}" for who, path, _ in PAGE_POSTS])
def test_no_form_data_makes_a_page_post_fail(context, who, path, fields):
    post_everything(who, path, fields, context)


@pytest.mark.parametrize("who, path, fields", PAGE_QUERIES,
                         ids=[f"{who} GET {path}" for who, path, _ in PAGE_QUERIES])
def test_no_query_makes_a_page_fail(context, who, path, fields):
    @FUZZ
    @given(query=query_params(fields))
    def run(query):
        url = url_of(path, context)
        check(client_as(who, context).get(url, query), url, False)

    run()
    for field in fields:
        for value in SWEEP_TEXT:
            url = url_of(path, context)
            check(client_as(who, context).get(url, {field: value}), url, False)


def png(parameters: str | None = None, ldmsite: str | None = None, size=(4, 4)) -> bytes:
    info = PngInfo()
    if parameters is not None:
        info.add_text("parameters", parameters)
    if ldmsite is not None:
        info.add_text("ldmsite", ldmsite)
    buffer = io.BytesIO()
    PILImage.new("RGB", size).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


INFOTEXT_PIECES = st.sampled_from(["Steps: ", "CFG scale: ", "Seed: ", "Size: ", "x", "Sampler: ", "Eta: ",
                                   "CLIP guidance window: ", ", ", "\n", "Negative prompt: ", '"', "\\", ":", "-",
                                   *HOSTILE_TEXT[:30]]) | st.text(max_size=10)


@FUZZ
@given(parameters=st.lists(INFOTEXT_PIECES, max_size=20).map("".join),
       ldmsite=st.none() | st.sampled_from(['{"prompt": ' * 5000, '{"steps": 1e400, "seed": ' + "9" * 500 + "}",
                                            '{"prompt": [[[["x"]]]], "width": "²"}', "nan", "[]"])
       | st.text(max_size=20))
def test_no_png_text_makes_the_import_fail(context, parameters, ldmsite):
    """POST /generate/import-png/: whatever the text chunks hold, 200 with the fields or 400 naming `file`."""
    upload = io.BytesIO(png(parameters, ldmsite))
    upload.name = "hostile.png"
    response = signed_in(context["people"]["owner"]).post("/generate/import-png/", {"file": upload})
    assert response.status_code in (200, 400), (response.status_code, response.content[:300])
    body = response.json()
    assert set(body) == {"fields", "lora_problems"} if response.status_code == 200 else set(body["errors"]) == {"file"}
    if response.status_code == 200:  # JSON a browser reads: no NaN or Infinity in it (as values: a prompt
        json.loads(response.content, parse_constant=not_json)  # may hold the words)


def not_json(constant: str):
    raise AssertionError(f"{constant} is not JSON: a browser cannot read it")


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"GIF89a",
                                     png()[:40], png()[:-12], png("x\n" + "a" * 70_000)])
def test_broken_and_oversized_pngs_are_refused_by_name(context, content):
    upload = io.BytesIO(content)
    upload.name = "broken.png"
    response = signed_in(context["people"]["owner"]).post("/generate/import-png/", {"file": upload})
    assert response.status_code == 400 and set(response.json()["errors"]) == {"file"}
