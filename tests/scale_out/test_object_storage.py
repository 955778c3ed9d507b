"""Media in S3-compatible object storage (moto's S3 server on loopback): a worker process
writes the images, the web process serves them, and deleting an image deletes its objects."""

import subprocess
import sys
from pathlib import Path

import boto3
import pytest

from tests.conftest import free_port, stop, wait_for_port
from tests.scale_out.conftest import FAST_RECOVERY
from tests.scale_out.harness import build_stack

pytestmark = pytest.mark.timeout(900)
BUCKET = "ldm-media"
KEYS = dict(LDM_S3_ACCESS_KEY="test-access", LDM_S3_SECRET_KEY="test-secret", LDM_S3_REGION="us-east-1")


@pytest.fixture
def s3(tmp_path):
    port = free_port()
    server = subprocess.Popen([str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                              stdout=open(tmp_path / "moto.log", "w"), stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=30, process=server)
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="test-access",
                              aws_secret_access_key="test-secret", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        yield endpoint, client
    finally:
        stop(server)


def test_a_worker_on_another_process_writes_images_to_the_bucket_that_the_web_tier_serves(tmp_path, s3,
                                                                                         tiny_model_dir):
    endpoint, client = s3
    stack = build_stack(tmp_path, tiny_model_dir, LDM_S3_BUCKET=BUCKET, LDM_S3_ENDPOINT_URL=endpoint, **KEYS,
                        **FAST_RECOVERY)
    try:
        stack.start_worker()
        stack.create_user("nora")
        session = stack.sign_in("nora")
        job_id = stack.submit(session, steps=3)
        state = stack.wait_until_final(session, [job_id], timeout=180)[job_id]
        assert state["status"] == "succeeded", state
        keys = {item["Key"] for item in client.list_objects_v2(Bucket=BUCKET).get("Contents", [])}
        assert len(keys) == 2 and {key.rsplit(".", 1)[1] for key in keys} == {"png", "webp"}
        assert not (tmp_path / "data" / "media").exists(), "nothing was written to the local disk"

        image = state["images"][0]
        response = session.get(stack.url + image["url"])
        assert response.status_code == 200 and response.headers["Content-Type"] == "image/png"
        assert response.content[:8] == b"\x89PNG\r\n\x1a\n"
        assert stack.sign_in_as_new("olga").get(stack.url + image["url"]).status_code == 404, "private"

        page = session.get(f"{stack.url}/images/{image['id']}/")
        deleted = session.post(f"{stack.url}/images/{image['id']}/delete/",
                               data={"csrfmiddlewaretoken": session.cookies["csrftoken"]},
                               headers={"Referer": page.url})
        assert deleted.ok
        assert client.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0, "no orphaned objects"
    finally:
        stack.stop()
