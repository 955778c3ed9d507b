"""The docs' client, against the real ASGI server (daphne, embedded worker): create a token,
submit over HTTP, stream the job over a websocket authenticated by subprotocol, download."""

import json

import pytest
import requests
from websockets.sync.client import connect

from tests.conftest import manage

SETUP = """
from django.contrib.auth import get_user_model
from generation.models import DiffusionModel
from ldmsite.accounts.tokens import create_token
DiffusionModel.objects.update(is_default=False)  # the built-in model, registered by migrate
DiffusionModel.objects.create(name="Tiny", slug="tiny", source={source!r}, default_width=32, default_height=32,
                              max_width=64, max_height=64, default_steps=2, default_sampler="Euler",
                              is_default=True)
user = get_user_model().objects.create_user("carol", "carol@example.com", "violet-lantern-4821")
print(create_token(user, "script", ["read", "generate"])[1])
"""


@pytest.mark.timeout(300)
def test_a_script_submits_streams_over_a_token_websocket_and_downloads(live_site, tiny_pipeline_dir):
    made = manage(live_site["env"], "shell", "-c", SETUP.format(source=str(tiny_pipeline_dir)))
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip().splitlines()[-1]
    base, auth = live_site["url"], {"Authorization": f"Bearer {token}"}

    job = requests.post(f"{base}/api/v1/generations/", headers=auth, timeout=30,
                        json={"prompt": "a red circle", "steps": 2, "seed": 5}).json()
    seen = []
    with connect(job["websocket_url"], subprotocols=["ldmsite", f"ldmsite.token.{token}"],
                 open_timeout=30) as socket:
        assert socket.subprotocol == "ldmsite"
        for raw in socket:
            event = json.loads(raw)
            seen.append(event["type"])
            status = event.get("status")
            if event["type"] in ("generation.succeeded", "generation.failed", "generation.cancelled") or (
                    event["type"] == "generation.snapshot" and status in ("succeeded", "failed", "cancelled")):
                break
    assert seen[0] == "generation.snapshot"
    done = requests.get(f"{base}{job['url']}", headers=auth, timeout=30).json()
    assert done["status"] == "succeeded", (seen, done)
    png = requests.get(f"{base}{done['images'][0]['file']}", headers=auth, timeout=30)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
