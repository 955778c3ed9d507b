"""Media in S3-compatible storage are written private: the settings that `LDM_S3_BUCKET` turns on
store objects without any public grant and sign the URLs they hand out. (The web tier streams a
file only after checking who may see it; a public-read object would skip that check.)"""

import urllib.request
from urllib.error import HTTPError

from tests.conftest import manage, site_env
from tests.scale_out.test_object_storage import BUCKET, KEYS, s3  # noqa: F401  (fixture)

PUBLIC_GROUPS = ("http://acs.amazonaws.com/groups/global/AllUsers",
                 "http://acs.amazonaws.com/groups/global/AuthenticatedUsers")
SAVE = """
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from gallery.models import unguessable_name
name = default_storage.save(unguessable_name("png"), ContentFile(b"\\x89PNG probe"))
print(name)
print(default_storage.url(name))
"""


def test_objects_are_written_private_and_handed_out_only_as_signed_urls(tmp_path, s3):  # noqa: F811
    endpoint, client = s3
    env = site_env(tmp_path / "data", LDM_S3_BUCKET=BUCKET, LDM_S3_ENDPOINT_URL=endpoint, **KEYS)
    result = manage(env, "shell", "-c", SAVE)
    assert result.returncode == 0, result.stderr
    key, url = result.stdout.split()[-2:]
    grants = client.get_object_acl(Bucket=BUCKET, Key=key)["Grants"]
    assert grants, "the object has an ACL"
    assert not [grant for grant in grants if grant["Grantee"].get("URI") in PUBLIC_GROUPS], grants
    assert "X-Amz-Signature=" in url or "Signature=" in url, "URLs are signed (querystring_auth)"
    try:
        answer = urllib.request.urlopen(f"{endpoint}/{BUCKET}/{key}", timeout=10).status
    except HTTPError as error:
        answer = error.code
    assert answer == 403, "an unsigned request for the object is refused"
