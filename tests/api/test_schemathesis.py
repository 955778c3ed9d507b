"""A bounded schemathesis run against the live schema, as two people: no 5xx, no answer the
schema does not describe.

Bounded: a few examples per operation (plus a few aimed at real objects), no shrinking, and
no worker: jobs stay queued, txt2img answers 202 at once (LDM_A1111_TIMEOUT_SECONDS=0).
"""

import pytest
import requests
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (content_type_conformance, response_headers_conformance,
                                               response_schema_conformance, status_code_conformance)

from gallery.models import Album, AlbumItem, Image
from generation.services import submit_generation
from tests.api.conftest import make_image, make_token

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
EXAMPLES_PER_OPERATION = 4  # per strategy; the hypothesis fuzz suite (tests/security) goes deeper on bad input


@pytest.mark.timeout(900)
@pytest.mark.django_db(transaction=True)
def test_a_bounded_schemathesis_run_finds_no_server_error_and_no_schema_violation(
        live_server, tiny_model, alice, bob, broker, settings):
    settings.LDM_A1111_TIMEOUT_SECONDS = 0
    settings.LDM_MAX_ACTIVE_JOBS = 10_000
    settings.LDM_DAILY_IMAGE_QUOTA = 0
    tokens = [make_token(alice), make_token(bob)]
    public = make_image(alice, visibility=Image.Visibility.PUBLIC, saved=True)
    album = Album.objects.create(owner=alice, title="Shared", visibility=Album.Visibility.PUBLIC)
    AlbumItem.objects.create(album=album, image=public, position=1)
    job = submit_generation(alice, {"prompt": "a red circle", "steps": 2})
    real_ids = {"/api/v1/images/": public.pk, "/api/v1/albums/": album.pk, "/api/v1/generations/": job.pk}

    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/")
    session = requests.Session()
    failures, operations, calls = [], 0, 0

    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1
        # Valid input, then invalid input (wrong types, out of range, missing fields): never a 5xx.
        # Invalid input is judged before whose request it is: one person sends it.
        strategies = [(operation.as_strategy(), tokens), (operation.as_strategy(GenerationMode.NEGATIVE), tokens[:1])]
        for prefix, real_id in real_ids.items():
            if operation.path.startswith(prefix) and "{id}" in operation.path:
                strategies.append((operation.as_strategy(path_parameters={"id": real_id}), tokens))

        for strategy, senders in strategies:
            @given(case=strategy)
            @hypothesis_settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
                                 derandomize=True, phases=[Phase.explicit, Phase.generate],
                                 suppress_health_check=list(HealthCheck))
            def run(case):
                nonlocal calls
                for token in senders:
                    calls += 1
                    try:
                        case.call_and_validate(session=session, checks=CHECKS,
                                               headers={"Authorization": f"Bearer {token}"})
                    except BaseException as error:  # collect them all (failure groups too), report at the end
                        if isinstance(error, (KeyboardInterrupt, SystemExit)):
                            raise
                        failures.append(f"{operation.method.upper()} {operation.path}: {error}"[:1500])

            run()

    assert operations >= 30, "every documented operation was exercised"
    assert not failures, f"{len(failures)} of {calls} calls failed:\n\n" + "\n\n".join(dict.fromkeys(failures))


def test_the_schema_and_docs_are_public_and_describe_every_endpoint_and_its_auth(client):
    schema = client.get("/api/schema/?format=json")
    assert schema.status_code == 200
    document = schema.json()
    schemes = document["components"]["securitySchemes"]
    assert schemes["tokenAuth"] == {**schemes["tokenAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["basicTokenAuth"]["scheme"] == "basic"
    paths = document["paths"]
    for expected in ("/api/v1/generations/", "/api/v1/images/{id}/file/", "/api/v1/albums/{id}/images/",
                     "/api/v1/explore/", "/api/v1/me/", "/sdapi/v1/txt2img", "/sdapi/v1/options"):
        assert expected in paths
    txt2img = paths["/sdapi/v1/txt2img"]["post"]
    assert {"basicTokenAuth": []} in txt2img["security"] and "422" in txt2img["responses"]
    create = paths["/api/v1/generations/"]["post"]
    assert "202" in create["responses"] and "429" in create["responses"]
    assert "Retry-After" in create["responses"]["429"]["headers"]
    docs = client.get("/api/docs/")
    assert docs.status_code == 200 and b"swagger" in docs.content.lower()
