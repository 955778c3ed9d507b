"""/sdapi/v1/loras and refresh-loras as A1111 answers them, for the LoRAs the token's person may use;
<lora:name:w> in an A1111 prompt names them by the same rule."""

import base64

import pytest
from rest_framework.test import APIClient
from safetensors.torch import save

from gallery import loras
from generation.diffusion.lora import model_skeleton
from tests.api.conftest import make_token
from tests.generation.diffusion.tiny import build_tiny_lora_layers, tiny_lora_state_dict


@pytest.fixture
def lora_data(tiny_model):
    return save(tiny_lora_state_dict(build_tiny_lora_layers(model_skeleton(tiny_model.source))))


def a1111_client(user) -> APIClient:
    """As A1111 clients call: HTTP Basic, any user name, the token as password."""
    client = APIClient()
    credentials = base64.b64encode(f"anyone:{make_token(user, ('read', 'generate'))}".encode()).decode()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {credentials}")
    return client


def test_loras_lists_mine_by_name_and_others_shared_ones_as_owner_slash_name_in_a1111s_shape(
        tiny_model, alice, bob, lora_data):
    loras.upload_lora(alice, name="Zeta", data=lora_data, base_model=tiny_model, trigger_words="zq")
    loras.upload_lora(bob, name="shared", data=lora_data, base_model=tiny_model, visibility="public")
    loras.upload_lora(bob, name="linked", data=lora_data, base_model=tiny_model, visibility="unlisted")
    loras.upload_lora(bob, name="private", data=lora_data, base_model=tiny_model)
    answer = a1111_client(alice).get("/sdapi/v1/loras")
    assert answer.status_code == 200
    items = answer.json()
    assert [item["name"] for item in items] == ["bob/linked", "bob/shared", "Zeta"]
    for item in items:
        assert set(item) == {"name", "alias", "path", "metadata"} and item["alias"] == item["name"]
        assert item["path"].endswith(".safetensors") and isinstance(item["metadata"], dict)
    assert items[2]["metadata"]["ss_trigger_words"] == "zq" and items[2]["path"] == "alice/Zeta.safetensors"
    assert [item["name"] for item in a1111_client(bob).get("/sdapi/v1/loras").json()] == ["linked", "private",
                                                                                         "shared"]


def test_loras_is_an_empty_list_for_someone_without_any_and_refresh_loras_answers_null(tiny_model, alice):
    client = a1111_client(alice)
    assert client.get("/sdapi/v1/loras").json() == []
    refresh = client.post("/sdapi/v1/refresh-loras")
    assert refresh.status_code == 200 and refresh.content == b"null"


def test_someone_elses_private_lora_in_an_a1111_prompt_is_a_422_naming_loras(tiny_model, alice, bob, lora_data,
                                                                              settings):
    settings.LDM_A1111_TIMEOUT_SECONDS = 0
    loras.upload_lora(bob, name="private", data=lora_data, base_model=tiny_model)
    answer = a1111_client(alice).post("/sdapi/v1/txt2img", {"prompt": "a red circle <lora:bob/private:1>",
                                                            "steps": 2}, format="json")
    assert answer.status_code == 422 and "loras" in answer.content.decode()
    assert "bob/private" in answer.content.decode()
