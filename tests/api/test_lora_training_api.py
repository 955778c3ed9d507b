"""/api/v1/lora-trainings/: start a training from an album (JSON) or a zip (multipart), read it,
cancel it; field-named errors, the cap as a 429, token scopes, owners see their own."""

import pytest

from generation.models import LoraTraining
from tests.api.conftest import client_for
from tests.generation.test_lora_trainings import plus_album, plus_pngs, zip_of

URL = "/api/v1/lora-trainings/"


def test_a_training_started_from_an_album_answers_202_with_its_stream(tiny_model, alice):
    album = plus_album(alice, 2)
    response = client_for(alice).post(URL, {"name": "plsgn", "trigger": "plsgn", "album": album.pk, "steps": 4},
                                      format="json")
    assert response.status_code == 202, response.json()
    body = response.json()
    training = LoraTraining.objects.get()
    assert body["id"] == training.pk and body["status"] == "queued" and body["total"] == 4
    assert body["websocket_url"].endswith(f"/ws/trainings/{training.pk}/")
    assert response["Location"].endswith(f"/loras/trainings/{training.pk}/")
    listed = client_for(alice).get(URL).json()
    assert [item["id"] for item in listed["results"]] == [training.pk]
    assert client_for(alice).get(f"{URL}{training.pk}/").json()["name"] == "plsgn"


def test_a_training_started_from_a_zip_counts_its_images(tiny_model, alice):
    (data, caption), = plus_pngs(1)
    upload = zip_of({"one.png": data, "one.txt": caption.encode()})
    response = client_for(alice).post(URL, {"name": "plsgn", "trigger": "plsgn", "steps": "4", "images": upload},
                                      format="multipart")
    assert response.status_code == 202, response.json()
    assert LoraTraining.objects.get().image_count == 1


def test_bad_fields_are_a_400_naming_each_field(tiny_model, alice):
    response = client_for(alice).post(URL, {"name": "", "trigger": "plsgn", "rank": 999, "learning_rate": -1},
                                      format="json")
    assert response.status_code == 400
    errors = response.json()
    assert {"name", "rank", "learning_rate", "album"} <= set(errors.get("errors", errors))
    assert not LoraTraining.objects.exists()


def test_a_second_training_over_the_cap_is_a_429(tiny_model, alice, settings):
    settings.LDM_MAX_ACTIVE_TRAININGS = 1
    album = plus_album(alice, 1)
    client = client_for(alice)
    assert client.post(URL, {"name": "a", "trigger": "t", "album": album.pk}, format="json").status_code == 202
    refused = client.post(URL, {"name": "b", "trigger": "t", "album": album.pk}, format="json")
    assert refused.status_code == 429 and "Retry-After" in refused


@pytest.mark.parametrize("scopes, expected", [(("read",), 403), (("generate",), 202)])
def test_starting_a_training_needs_the_generate_scope(tiny_model, alice, scopes, expected):
    album = plus_album(alice, 1)
    response = client_for(alice, scopes=scopes).post(URL, {"name": "a", "trigger": "t", "album": album.pk},
                                                     format="json")
    assert response.status_code == expected


def test_someone_else_can_neither_see_nor_cancel_a_training(tiny_model, alice, bob, staff):
    album = plus_album(alice, 1)
    training_id = client_for(alice).post(URL, {"name": "a", "trigger": "t", "album": album.pk},
                                         format="json").json()["id"]
    assert client_for(bob).get(f"{URL}{training_id}/").status_code == 404
    assert client_for(bob).post(f"{URL}{training_id}/cancel/").status_code == 404
    assert client_for(bob).get(URL).json()["results"] == []
    assert client_for(staff).get(f"{URL}{training_id}/").status_code == 200
    cancelled = client_for(alice).post(f"{URL}{training_id}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
