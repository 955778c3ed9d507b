"""Every token scope against every API route and method, and the websocket.

The routes come from the URL resolver and the methods from each view, so a new endpoint is in the
matrix the day it is added: by default it needs **read** for GET and **write** for anything else
(`ldmsite.api.authentication.required_scope`); an endpoint that needs another scope is listed in
`SCOPES` below, which is the table of docs/API.md. A token with the scope gets past the check (any
answer but 401 and the scope's 403); a token without it gets a 403 naming the missing scope.
"""

from __future__ import annotations

import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from rest_framework.test import APIClient

from generation.models import Generation
from generation.services import submit_generation
from ldmsite.websockets import websocket_application
from tests.api.conftest import make_token
from tests.security.test_web_pages import PARAMETER, walk

ALL_SCOPES = ("read", "generate", "write")
API_ROUTES = ("api/v1/", "sdapi/v1/", "internal/", "api/schema/", "api/docs/")
# (route name, method) -> the scope it needs, where that is not read for GET and write otherwise.
SCOPES = {
    ("api:generation-list", "POST"): "generate",
    ("api:generation-cancel", "POST"): "generate",
    ("api:lora-training-list", "POST"): "generate",
    ("api:lora-training-cancel", "POST"): "generate",
    ("api:a1111-txt2img", "POST"): "generate",
    ("api:a1111-img2img", "POST"): "generate",
    ("api:a1111-interrupt", "POST"): "generate",
    ("api:a1111-skip", "POST"): "generate",
    ("api:a1111-options", "POST"): "generate",
    ("api:a1111-png-info", "POST"): "read",
    ("api:a1111-refresh-checkpoints", "POST"): "read",
    ("api:a1111-refresh-vae", "POST"): "read",
    ("api:a1111-refresh-loras", "POST"): "read",
    ("api:a1111-refresh-embeddings", "POST"): "read",
    ("api:a1111-internal-progress", "POST"): "read",
}
# Routes anyone may call, with or without a token of any scope.
PUBLIC = {"api:a1111-internal-ping", "api:schema", "api:docs"}


def api_endpoints() -> list[tuple[str, str, str]]:
    """(route, name, method) of every API endpoint."""
    endpoints = []
    for route, name, view in walk():
        if not route.startswith(API_ROUTES):
            continue
        view_class = getattr(view, "cls", None) or getattr(view, "view_class", None)
        assert view_class is not None, f"{name}: not a class-based API view"
        for method in view_class.http_method_names:
            if method not in ("options", "head", "trace") and hasattr(view_class, method):
                endpoints.append((route, name, method.upper()))
    return endpoints


def expected_scope(name: str, method: str) -> str | None:
    if name in PUBLIC:
        return None
    return SCOPES.get((name, method), "read" if method == "GET" else "write")


@pytest.fixture
def owned(people, things, model):
    """The owner's job, image and album, so every route with an id reaches a real object."""
    job = submit_generation(people["owner"], {"prompt": "a red circle", "steps": 2})
    return {"generations/": job.pk, "images/": things["private"].pk, "albums/": things["album"].pk,
            "image_id": things["public"].pk, "slug": model.slug}


def url_for(route: str, owned: dict) -> str:
    def value(match):
        if match["name"] in owned:
            return str(owned[match["name"]])
        fits = [prefix for prefix in owned if prefix.endswith("/") and prefix in route]
        return str(owned[max(fits, key=len)]) if fits else "1"
    return "/" + PARAMETER.sub(value, route)


def call(client, method: str, url: str):
    if method in ("POST", "PUT", "PATCH"):
        return getattr(client, method.lower())(url, json.dumps({}), content_type="application/json")
    return getattr(client, method.lower())(url)


def test_the_matrix_covers_the_documented_endpoints():
    endpoints = {(name, method) for _, name, method in api_endpoints()}
    assert len(endpoints) >= 50
    assert set(SCOPES) <= endpoints, f"listed but gone: {set(SCOPES) - endpoints}"
    assert {("api:image-detail", "PATCH"), ("api:image-detail", "DELETE"), ("api:image-like", "POST"),
            ("api:image-report", "POST"), ("api:a1111-options", "GET"), ("api:album-order", "POST")} <= endpoints


@pytest.mark.parametrize("route, name, method", api_endpoints())
def test_each_scope_against_each_endpoint(owned, people, settings, route, name, method):
    settings.LDM_A1111_TIMEOUT_SECONDS = 0  # txt2img answers 202 at once: no worker runs here
    url = url_for(route, owned)
    needed = expected_scope(name, method)
    for scope in ALL_SCOPES:
        client = APIClient(HTTP_AUTHORIZATION=f"Bearer {make_token(people['owner'], [scope], name=scope)}")
        response = call(client, method, url)
        body = response.json() if response.get("Content-Type", "").startswith("application/json") else None
        detail = body.get("detail", "") if isinstance(body, dict) else ""
        refused_for_scope = response.status_code == 403 and "scope" in str(detail)
        if needed is None or scope == needed:
            assert response.status_code != 401 and not refused_for_scope, (scope, response.status_code, detail)
            assert response.status_code < 500, (scope, response.status_code)
        else:
            assert refused_for_scope and f"'{needed}'" in str(detail), (scope, needed, response.status_code, detail)
    if needed is not None:
        assert call(APIClient(), method, url).status_code in (401, 403), "no credentials, no answer"


def test_a1111_progress_and_interrupt_see_only_the_callers_jobs(people, model, settings):
    job = submit_generation(people["owner"], {"prompt": "a red circle", "steps": 2})
    someone = APIClient(HTTP_AUTHORIZATION=f"Bearer {make_token(people['other'], ['read', 'generate'])}")
    progress = someone.get("/sdapi/v1/progress").json()
    assert progress["state"]["job_count"] == 0 and progress["current_task"] is None
    internal = someone.post("/internal/progress", {"id_task": f"ldmsite-{job.pk}"}, format="json").json()
    assert not internal["active"] and not internal["queued"] and not internal["completed"]
    assert someone.post("/sdapi/v1/interrupt").status_code == 200
    assert Generation.objects.get(pk=job.pk).status == "queued", "someone else's interrupt leaves my job alone"


@pytest.mark.asyncio
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("scope, opens", [("read", True), ("generate", False), ("write", False)])
async def test_each_scope_against_the_websocket(people, model, scope, opens):
    token = await sync_to_async(make_token)(people["owner"], [scope])
    communicator = WebsocketCommunicator(websocket_application, "/ws/generations/",
                                         subprotocols=["ldmsite", f"ldmsite.token.{token}"])
    connected, _ = await communicator.connect()
    assert connected
    if opens:
        assert await communicator.receive_nothing(timeout=0.5), "open, and nothing to say: no jobs"
        await communicator.disconnect()
    else:
        message = await communicator.receive_output(timeout=5)
        assert (message["type"], message["code"]) == ("websocket.close", 4401)
