"""Request rates, the active-job cap and the daily image quota: 429 with Retry-After, naming the limit."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from PIL import Image as Picture

from generation.models import Generation
from generation.outputs import store_generated_image
from generation.services import submit_generation
from tests.api.conftest import client_for, make_token

JOB = {"prompt": "a red circle", "steps": 2, "width": 32, "height": 32}


def assert_limited(response, limit):
    assert response.status_code == 429, response.content
    assert int(response["Retry-After"]) >= 1
    assert response.json()["limit"] == limit
    return response.json()["detail"]


def test_a_person_over_the_request_rate_gets_429_with_retry_after(tiny_model, alice, bob, settings):
    settings.LDM_API_RATE = "3/minute"
    first, second = client_for(alice), client_for(alice)  # two tokens, one person
    for client in (first, second, first):
        assert client.get("/api/v1/me/").status_code == 200
    detail = assert_limited(second.get("/api/v1/me/"), "request_rate")
    assert "3 per minute" in detail
    assert client_for(bob).get("/api/v1/me/").status_code == 200, "other people are not slowed down"


def test_submissions_have_their_own_lower_rate(tiny_model, alice, settings):
    settings.LDM_API_GENERATE_RATE = "2/minute"
    client = client_for(alice)
    for _ in range(2):
        assert client.post("/api/v1/generations/", JOB, format="json").status_code == 202
    assert_limited(client.post("/api/v1/generations/", JOB, format="json"), "generate_rate")
    assert client.get("/api/v1/generations/").status_code == 200


def test_the_active_job_cap_answers_429_naming_it(tiny_model, alice, settings):
    settings.LDM_MAX_ACTIVE_JOBS = 2
    client = client_for(alice)
    for _ in range(2):
        client.post("/api/v1/generations/", JOB, format="json")
    detail = assert_limited(client.post("/api/v1/generations/", JOB, format="json"), "active_jobs")
    assert "the limit is 2" in detail


def test_the_daily_quota_counts_images_and_gives_back_cancelled_ones(tiny_model, alice, settings):
    settings.LDM_DAILY_IMAGE_QUOTA = 3
    client = client_for(alice)
    first = client.post("/api/v1/generations/", {**JOB, "num_images": 2}, format="json")
    assert first.status_code == 202
    detail = assert_limited(client.post("/api/v1/generations/", {**JOB, "num_images": 2}, format="json"),
                            "daily_images")
    assert "2 of your 3 images" in detail
    client.post(first.json()["cancel_url"])
    assert client.post("/api/v1/generations/", {**JOB, "num_images": 2}, format="json").status_code == 202


def test_staff_are_exempt_from_the_daily_quota(tiny_model, staff, settings):
    settings.LDM_DAILY_IMAGE_QUOTA = 1
    client = client_for(staff)
    assert [client.post("/api/v1/generations/", JOB, format="json").status_code for _ in range(3)] == [202] * 3


def test_the_quota_holds_for_every_entry_point(tiny_model, alice, settings):
    settings.LDM_DAILY_IMAGE_QUOTA = 1
    submit_generation(alice, JOB)
    response = client_for(alice).post("/sdapi/v1/txt2img", {"prompt": "a red circle"}, format="json")
    assert_limited(response, "daily_images")


@pytest.mark.django_db(transaction=True)
def test_a_burst_of_n_plus_ten_submissions_accepts_exactly_n(live_server, tiny_model, alice, settings):
    settings.LDM_DAILY_IMAGE_QUOTA = quota = 5
    settings.LDM_MAX_ACTIVE_JOBS = 100
    headers = {"Authorization": f"Bearer {make_token(alice)}"}

    def submit(_):
        response = requests.post(f"{live_server.url}/api/v1/generations/", json=JOB, headers=headers, timeout=60)
        return response.status_code, response.headers.get("Retry-After"), response.json().get("limit")

    with ThreadPoolExecutor(max_workers=quota + 10) as pool:
        results = list(pool.map(submit, range(quota + 10)))
    statuses = sorted(status for status, _, _ in results)
    assert statuses == [202] * quota + [429] * 10
    assert all(limit == "daily_images" and int(retry) >= 1 for status, retry, limit in results if status == 429)
    assert Generation.objects.filter(owner=alice).count() == quota


def test_the_daily_quota_counts_the_partial_images_a_cancelled_job_kept(tiny_model, alice, settings):
    settings.LDM_DAILY_IMAGE_QUOTA = 3
    client = client_for(alice)
    interrupted = Generation.objects.get(pk=client.post("/api/v1/generations/", {**JOB, "num_images": 2},
                                                        format="json").json()["id"])
    Generation.objects.filter(pk=interrupted.pk).update(status=Generation.Status.CANCELLED)
    store_generated_image(interrupted, 0, Picture.new("RGB", (32, 32)), {"seed": 1, "interrupted": True}, "x", None)
    assert client.post("/api/v1/generations/", {**JOB, "num_images": 3}, format="json").status_code == 429, \
        "the one image it kept still counts: 1 + 3 is over 3"
    assert client.post("/api/v1/generations/", {**JOB, "num_images": 2}, format="json").status_code == 202, \
        "the image it did not make is given back"
