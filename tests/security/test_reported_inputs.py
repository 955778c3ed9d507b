"""The inputs of issue 24's outside probe, each answered with a field-named error, never a 500.

Failure 2 of the issue: huge and Unicode numbers, deep nesting, ids in page forms that are not
ids. (Failure 1, the freeze, is `test_linear_parsing.py`; failure 3, the private image in a
public album, `tests/gallery/test_permissions.py`.)
"""

import base64
import json

import pytest
from django.contrib.messages import get_messages

from gallery.models import Album, AlbumItem
from generation.models import Generation
from ldmsite.api.parsers import SafeJSONParser, depth_exceeds
from tests.security.conftest import api_client, signed_in

HUGE = 10 ** 400
PROMPT = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64}


def api_errors(response) -> dict:
    assert response.status_code == 400, (response.status_code, response.content[:500])
    return response.json()["errors"]


def a1111_fields(response) -> set[str]:
    assert response.status_code == 422, (response.status_code, response.content[:500])
    return {".".join(str(part) for part in item["loc"][1:]) for item in response.json()["detail"]}


def page_messages(response) -> list[str]:
    assert response.status_code < 500
    return [str(message) for message in get_messages(response.wsgi_request)]


# --- The REST API -----------------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["guidance_scale", "eta", "autoguidance_scale", "clip_guidance_scale",
                                   "clip_guidance_start", "steps", "width", "seed", "num_images"])
@pytest.mark.parametrize("value", [HUGE, -HUGE, 1e308, str(HUGE), "9" * 5000],
                         ids=["400-digits", "minus-400-digits", "1e308", "400-digits-as-text", "5000-digits-as-text"])
def test_a_huge_number_in_any_request_field_is_refused_by_name(people, model, field, value):
    response = api_client(people["owner"]).post("/api/v1/generations/", {**PROMPT, field: value}, format="json")
    assert field in api_errors(response)
    assert not Generation.objects.exists()


@pytest.mark.parametrize("field", ["steps", "width", "num_images", "seed", "guidance_scale", "eta"])
@pytest.mark.parametrize("value", ["²", "①", "¹²", "８", "١٢٨", "1_0", "0x10", "nan", "inf", "-inf", "1e400"])
def test_unicode_digits_and_number_spellings_python_reads_are_refused_by_name(people, model, field, value):
    response = api_client(people["owner"]).post("/api/v1/generations/", {**PROMPT, field: value}, format="json")
    assert field in api_errors(response)


@pytest.mark.parametrize("body", [b"[" * 100_000, b'{"prompt": ' * 50_000, b"[" * 900 + b"]" * 900,
                                  b'{"a": ' * 200 + b"1" + b"}" * 200])
@pytest.mark.parametrize("path", ["/api/v1/generations/", "/api/v1/albums/"])
def test_a_deeply_nested_body_is_a_400_not_a_recursion_error(people, model, body, path):
    response = api_client(people["owner"]).generic("POST", path, body, content_type="application/json")
    assert "__all__" in api_errors(response)


def test_a_body_nested_within_the_limit_is_still_read(people, model):
    body = json.dumps({**PROMPT, "negative_prompt": [[[["x"]]]]})
    response = api_client(people["owner"]).generic("POST", "/api/v1/generations/", body,
                                                   content_type="application/json")
    assert set(api_errors(response)) == {"negative_prompt"}


def test_an_album_cover_beyond_any_id_is_refused_by_name(people, things):
    response = api_client(people["owner"]).patch(f"/api/v1/albums/{things['album'].pk}/", {"cover": HUGE},
                                                 format="json")
    assert "cover" in api_errors(response)


@pytest.mark.parametrize("cursor", [base64.urlsafe_b64encode(b"[" * 20_000).decode(), "W" * 5000,
                                    base64.urlsafe_b64encode(b'[1e400, "2020-01-01T00:00", 1]').decode()],
                         ids=["nested 20,000 deep", "5000 characters", "an infinite count"])
def test_a_hand_made_explore_cursor_shows_the_first_page_or_is_refused(people, things, client, cursor):
    """The Explore page's cursor was decoded with json.loads: nested deep, a RecursionError (500)."""
    assert client.get("/explore/", {"cursor": cursor}).status_code == 200
    response = api_client(people["owner"]).get("/api/v1/explore/", {"cursor": cursor[:500]})
    assert response.status_code == 200 or "cursor" in api_errors(response)


# --- The A1111 API (generation/a1111/) ---------------------------------------------------------------

A1111_TXT2IMG = {"prompt": "a red circle", "steps": 2, "width": 64, "height": 64}


@pytest.mark.parametrize("body, field", [
    ({"cfg_scale": HUGE}, "cfg_scale"),  # judged by validate_request
    ({"subseed_strength": HUGE}, "subseed_strength"),
    ({"s_noise": HUGE}, "s_noise"),
    ({"override_settings": {"eta_ddim": HUGE}}, "override_settings.eta_ddim"),
    ({"batch_size": "²"}, "batch_size"),
    ({"n_iter": "①"}, "n_iter"),
    ({"steps": "²"}, "steps"),
])
def test_a1111_txt2img_refuses_huge_and_unicode_numbers_by_name(people, model, body, field):
    response = api_client(people["owner"]).post("/sdapi/v1/txt2img", {**A1111_TXT2IMG, **body}, format="json")
    assert field in a1111_fields(response)


def test_a1111_options_refuses_a_huge_eta_ddim_by_name(people, model):
    response = api_client(people["owner"]).post("/sdapi/v1/options", {"eta_ddim": HUGE}, format="json")
    assert "eta_ddim" in a1111_fields(response)


@pytest.mark.parametrize("content_type", ["application/json", ""])
def test_a1111_deep_nesting_is_a_422_with_or_without_content_type(people, model, content_type):
    client = api_client(people["owner"])
    response = client.generic("POST", "/sdapi/v1/txt2img", b"[" * 100_000, content_type=content_type)
    assert response.status_code in (400, 422), (response.status_code, response.content[:300])


# --- Page forms ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("images", ["²", "①", "1" + "0" * 25, "10^25", "-1", "", " x"])
def test_adding_to_an_album_names_the_images_field_for_anything_but_ids(people, things, images):
    response = signed_in(people["owner"]).post("/images/add-to-album/",
                                               {"images": [images], "album": things["album"].pk})
    assert any(message.startswith("Images:") for message in page_messages(response))


@pytest.mark.parametrize("album", ["abc", "²", "9" * 25])
def test_adding_to_an_album_that_is_not_an_id_names_the_album_field(people, things, album):
    response = signed_in(people["owner"]).post("/images/add-to-album/",
                                               {"images": [things["public"].pk], "album": album})
    assert response.status_code == 404 or any(message.startswith("Album:") for message in page_messages(response))


def test_a_json_client_gets_the_field_named_errors_of_a_page_form(people, things):
    response = signed_in(people["owner"]).post("/images/add-to-album/", {"images": ["²"], "album": "new"},
                                               HTTP_ACCEPT="application/json")
    assert response.status_code == 400 and set(response.json()["errors"]) == {"images"}


@pytest.mark.parametrize("data, field", [
    ({"action": "move", "image": "abc"}, "Image"),
    ({"action": "move", "image": "²"}, "Image"),
    ({"action": "move", "image": "9" * 30}, "Image"),
    ({"action": "remove", "images": "²"}, "Images"),
    ({"action": "remove", "images": "9" * 30}, "Images"),
    ({"action": "update", "cover": "abc"}, "Cover"),
    ({"action": "update", "cover": "①"}, "Cover"),
])
def test_editing_an_album_names_the_field_that_is_not_an_id(people, things, data, field):
    response = signed_in(people["owner"]).post(f"/albums/{things['album'].pk}/edit/", data)
    assert any(message.startswith(f"{field}:") for message in page_messages(response))
    assert AlbumItem.objects.filter(album=things["album"]).count() == 2


@pytest.mark.parametrize("remix", ["²", "①", "9" * 30, "abc"])
def test_a_remix_link_that_is_not_an_image_id_still_shows_the_generate_page(people, model, remix):
    response = signed_in(people["owner"]).get("/generate/", {"remix": remix})
    assert response.status_code in (200, 400)
    assert "Remix:" in response.content.decode()


def test_a_well_formed_album_edit_still_works(people, things):
    album, public = things["album"], things["public"]
    client = signed_in(people["owner"])
    client.post(f"/albums/{album.pk}/edit/", {"action": "move", "image": str(public.pk), "direction": "later"})
    assert list(album.items.values_list("image_id", flat=True)) == [things["private"].pk, public.pk]
    client.post(f"/albums/{album.pk}/edit/", {"action": "remove", "images": [str(public.pk)]})
    assert list(album.items.values_list("image_id", flat=True)) == [things["private"].pk]
    client.post(f"/albums/{album.pk}/edit/", {"action": "update", "cover": str(things["private"].pk)})
    assert Album.objects.get(pk=album.pk).cover_id == things["private"].pk


# --- Text PostgreSQL cannot store ------------------------------------------------------------------------

@pytest.mark.parametrize("field", ["prompt", "negative_prompt"])
def test_a_nul_character_in_a_prompt_is_refused_by_name(people, model, field):
    """SQLite stores "\\x00"; PostgreSQL (scale-out) refuses it in text and JSON: a 500 there."""
    body = {**PROMPT, field: "a red\x00 circle"}
    assert field in api_errors(api_client(people["owner"]).post("/api/v1/generations/", body, format="json"))


@pytest.mark.parametrize("data, field", [({"title": "Sky\x00"}, "Title"), ({"title": "Sky", "description": "\x00"},
                                                                           "Description")])
def test_a_nul_character_in_an_album_form_is_refused_by_name(people, model, data, field):
    response = signed_in(people["owner"]).post("/albums/new/", data)
    assert any(message.startswith(f"{field}:") for message in page_messages(response))
    assert not Album.objects.exists()


def test_a_body_beyond_the_parsers_limit_is_a_413_before_it_is_decoded(people, model, monkeypatch):
    monkeypatch.setattr(SafeJSONParser, "max_bytes", 1000)
    client = api_client(people["owner"])
    body = json.dumps({**PROMPT, "negative_prompt": "x" * 2000})
    assert client.generic("POST", "/api/v1/generations/", body, content_type="application/json").status_code == 413
    assert client.post("/api/v1/generations/", PROMPT, format="json").status_code == 202


@pytest.mark.parametrize("data, deepest", [(1, 0), ([], 1), ([[]], 2), ({"a": [{}]}, 3), ([[1], [[[2]]], 3], 4),
                                           ([[[]]] * 3 + [[]], 3), ({"a": 1, "b": {"c": [[]]}}, 4)])
def test_the_depth_check_counts_levels_exactly(data, deepest):
    assert not depth_exceeds(data, deepest) and (deepest == 0 or depth_exceeds(data, deepest - 1))


@pytest.mark.parametrize("next_url", ["²", "-1", "gallery:history", "//evil.example/", "https://evil.example/",
                                      "/\\evil.example"])
def test_a_next_that_is_no_path_of_this_site_returns_to_the_page_not_a_500(people, things, next_url):
    """`next=²` made redirect() look "²" up as a view name: NoReverseMatch, a 500 (found by the fuzz suite)."""
    image = things["private"]
    response = signed_in(people["owner"]).post(f"/images/{image.pk}/save/", {"saved": "true", "next": next_url})
    assert response.status_code == 302 and response["Location"] == image.get_absolute_url()


def test_a_next_path_of_this_site_is_followed(people, things):
    response = signed_in(people["owner"]).post(f"/images/{things['private'].pk}/save/", {"next": "/images/?saved=1"})
    assert response.status_code == 302 and response["Location"] == "/images/?saved=1"


@pytest.mark.parametrize("field", ["width", "height", "steps", "guidance_scale", "seed"])
def test_the_generate_page_shows_a_400_digit_number_as_a_field_error(people, model, field):
    """Found by the fuzz suite: the page form's step validator turned 400 digits into an OverflowError."""
    response = signed_in(people["owner"]).post("/generate/", {"prompt": "a red circle", field: "9" * 400})
    assert response.status_code == 400
    assert f'data-errors-for="{field}"><li>' in response.content.decode()
