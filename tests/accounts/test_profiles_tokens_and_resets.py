"""The API tokens page redirects after creating a token and shows it once; password reset by email;
profiles with a bio, an avatar (checked and re-encoded) and public counts; the owner's private flags
stay private; the navigation and the admin."""

import io
import re

import pytest
from django.contrib.auth import get_user_model
from django.core import mail
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.urls import reverse
from PIL import Image as Picture

from ldmsite.accounts.avatars import MAX_UPLOAD_BYTES
from ldmsite.accounts.models import AccessToken, Profile
from ldmsite.config import load_config

User = get_user_model()
PASSWORD = "violet-lantern-4821"
TOKEN_RE = re.compile(r'data-testid="new-token"[^>]*>(ldm_[A-Za-z0-9_-]+)<')


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", "alice@example.com", PASSWORD)


def signed_in(user) -> Client:
    client = Client()
    client.force_login(user)
    return client


def png_bytes(size=(300, 200), color=(200, 30, 30), fmt="PNG") -> bytes:
    out = io.BytesIO()
    Picture.new("RGB", size, color).save(out, format=fmt)
    return out.getvalue()


# --- API tokens: Post/Redirect/Get ------------------------------------------------------------

def test_creating_a_token_redirects_and_the_next_page_shows_it_once(alice):
    client = signed_in(alice)
    response = client.post(reverse("accounts:tokens"), {"name": "script", "scopes": ["read"], "expires_in": "30"})
    assert response.status_code == 302 and response["Location"] == reverse("accounts:tokens")
    assert "ldm_" not in response["Location"]
    shown = client.get(response["Location"])
    assert shown.status_code == 200 and shown["Cache-Control"] == "no-store"
    raw = TOKEN_RE.search(shown.content.decode()).group(1)
    assert AccessToken.objects.get(user=alice).prefix == raw[:len(AccessToken.objects.get(user=alice).prefix)]
    again = client.get(reverse("accounts:tokens")).content.decode()
    assert raw not in again and AccessToken.objects.filter(user=alice).count() == 1


def database_text() -> str:
    """Every string in every column of every table, sessions included."""
    values = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f'SELECT * FROM "{table}"')
            values += [value for row in cursor.fetchall() for value in row if isinstance(value, str)]
    return "\n".join(values)


def test_between_the_redirect_and_the_page_the_database_holds_no_usable_token(alice):
    client = signed_in(alice)
    client.post(reverse("accounts:tokens"), {"name": "script", "scopes": ["read"], "expires_in": ""})
    # Between the POST and the GET the session row holds only the token sealed with a pad that only
    # the browser has (an HttpOnly cookie limited to this page).
    waiting = database_text()
    pad = client.cookies["ldm_new_token_pad"].value
    raw = TOKEN_RE.search(client.get(reverse("accounts:tokens")).content.decode()).group(1)
    assert raw[4:] not in waiting and raw[4:] not in pad
    assert raw[4:] not in database_text()
    assert client.cookies["ldm_new_token_pad"].value == ""  # the GET deleted the pad


def test_a_token_page_opened_by_someone_else_never_shows_the_token(alice):
    client = signed_in(alice)
    client.post(reverse("accounts:tokens"), {"name": "script", "scopes": ["read"], "expires_in": ""})
    client.cookies.pop("ldm_new_token_pad")  # the session alone (a stolen database row) is not enough
    assert not TOKEN_RE.search(client.get(reverse("accounts:tokens")).content.decode())


def test_a_bad_token_form_is_shown_again_with_its_errors(alice):
    response = signed_in(alice).post(reverse("accounts:tokens"), {"name": "", "scopes": []})
    assert response.status_code == 400 and AccessToken.objects.count() == 0
    assert 'class="errorlist"' in response.content.decode()


# --- Password reset ---------------------------------------------------------------------------

def test_the_console_backend_is_the_default_and_smtp_is_configurable(tmp_path):
    config = load_config({"LDM_DATA_DIR": str(tmp_path)})
    assert config["LDM_EMAIL_BACKEND"] == "console"
    smtp = load_config({"LDM_DATA_DIR": str(tmp_path), "LDM_EMAIL_BACKEND": "smtp", "EMAIL_HOST": "mail.example",
                        "EMAIL_PORT": "465", "EMAIL_USE_TLS": "false", "EMAIL_USE_SSL": "true"})
    assert (smtp["EMAIL_HOST"], smtp["EMAIL_PORT"], smtp["EMAIL_USE_SSL"]) == ("mail.example", 465, True)


def test_a_person_resets_their_password_through_the_emailed_link(alice, client):
    response = client.post(reverse("password_reset"), {"email": "ALICE@example.com"})
    assert response.status_code == 302 and response["Location"] == reverse("password_reset_done")
    assert len(mail.outbox) == 1 and mail.outbox[0].to == ["alice@example.com"]
    link = re.search(r"http://testserver(/accounts/reset/\S+/)", mail.outbox[0].body).group(1)
    form_page = client.get(link, follow=True)
    assert form_page.status_code == 200 and form_page.context["validlink"]
    done = client.post(form_page.redirect_chain[-1][0], {"new_password1": "a-new-long-pass-9917",
                                                         "new_password2": "a-new-long-pass-9917"})
    assert done.status_code == 302 and done["Location"] == reverse("password_reset_complete")
    alice.refresh_from_db()
    assert alice.check_password("a-new-long-pass-9917")
    assert not client.get(link, follow=True).context["validlink"]  # a link works once


def test_an_unknown_address_gets_the_same_answer_and_no_email(db, client):
    response = client.post(reverse("password_reset"), {"email": "nobody@example.com"})
    assert response.status_code == 302 and len(mail.outbox) == 0


def test_login_and_signup_pages_link_to_the_reset(db, client):
    assert reverse("password_reset") in client.get(reverse("login")).content.decode()


# --- Profiles ---------------------------------------------------------------------------------

def test_a_profile_saves_a_bio_and_an_avatar_re_encoded_under_an_unguessable_name(alice):
    client = signed_in(alice)
    upload = SimpleUploadedFile("me.jpg", png_bytes(fmt="JPEG"), content_type="image/jpeg")
    response = client.post(reverse("accounts:profile"), {
        "first_name": "Alice A.", "email": "alice@example.com", "profile-bio": "I draw squares.",
        "profile-avatar": upload})
    assert response.status_code == 302
    profile = Profile.objects.get(user=alice)
    assert profile.bio == "I draw squares."
    assert re.fullmatch(r"avatars/[0-9a-f]{32}\.png", profile.avatar.name)
    with profile.avatar.open("rb") as handle, Picture.open(handle) as stored:
        assert stored.format == "PNG" and stored.size == (256, 256)
    served = Client().get(reverse("accounts:avatar", args=["alice"]))
    assert served.status_code == 200 and served["Content-Type"] == "image/png"
    assert served["X-Content-Type-Options"] == "nosniff"
    page = Client().get(reverse("gallery:profile", args=["alice"])).content.decode()
    assert "I draw squares." in page and reverse("accounts:avatar", args=["alice"]) in page
    assert "Alice A." in page


@pytest.mark.parametrize("content, message", [
    (b"not an image at all", "not an image"),
    (b"GIF89a" + b"\x00" * 10, "not an image"),
])
def test_an_avatar_that_is_not_an_image_is_refused_next_to_the_field(alice, content, message):
    upload = SimpleUploadedFile("x.png", content, content_type="image/png")
    response = signed_in(alice).post(reverse("accounts:profile"), {
        "first_name": "", "email": "alice@example.com", "profile-avatar": upload})
    assert response.status_code == 200 and message in response.content.decode()
    assert not Profile.objects.filter(user=alice).exclude(avatar="").exists()


def test_an_oversized_or_huge_avatar_is_refused_before_decoding(alice):
    big = SimpleUploadedFile("big.png", b"\x89PNG" + b"\x00" * (MAX_UPLOAD_BYTES + 1), content_type="image/png")
    response = signed_in(alice).post(reverse("accounts:profile"), {
        "first_name": "", "email": "alice@example.com", "profile-avatar": big})
    assert "larger than 2 MB" in response.content.decode()
    # A small file claiming 5000×5000 pixels (a decompression bomb's header) is refused by its header.
    wide = SimpleUploadedFile("wide.png", png_bytes(size=(5000, 5000)), content_type="image/png")
    response = signed_in(alice).post(reverse("accounts:profile"), {
        "first_name": "", "email": "alice@example.com", "profile-avatar": wide})
    assert "too many pixels" in response.content.decode()


def test_no_avatar_is_a_404(alice):
    assert Client().get(reverse("accounts:avatar", args=["alice"])).status_code == 404


def store_image(owner, visibility, saved=False, likes=0, seed=0):
    from generation.diffusion import format_parameters
    from generation.diffusion.request import validate_request
    from generation.models import DiffusionModel, Generation
    from generation.outputs import store_generated_image
    model = DiffusionModel.objects.get_or_create(slug="shapes", defaults=dict(
        name="Shapes", source="/nonexistent", default_width=64, default_height=64))[0]
    request = validate_request({"prompt": f"a red square {seed}", "seed": seed, "width": 64, "height": 64,
                                "steps": 25, "sampler": "DDIM"}, model.limits())
    job = Generation.objects.create(owner=owner, model=model, params=request.to_dict(), status="succeeded")
    metadata = {**request.to_dict(), "model": {"name": model.name}}
    image = store_generated_image(job, 0, Picture.new("RGB", (64, 64), (200, 40, 40)), metadata,
                                  format_parameters(metadata), 30.0)
    image.visibility, image.saved, image.like_count = visibility, saved, likes
    image.save()
    return image


def test_the_public_profile_counts_public_images_and_likes_and_hides_private_flags(alice):
    store_image(alice, "public", saved=True, likes=3, seed=1)
    store_image(alice, "public", saved=True, likes=2, seed=2)
    store_image(alice, "private", saved=True, likes=0, seed=3)
    visitor = User.objects.create_user("vic", "vic@example.com", PASSWORD)
    for client in (Client(), signed_in(visitor)):
        page = client.get(reverse("gallery:profile", args=["alice"])).content.decode()
        assert re.search(r'data-testid="public-image-count"><strong>2</strong> public images', page)
        assert re.search(r'data-testid="like-total"><strong>5</strong> likes', page)
        assert "saved" not in page and "CLIP" not in page
    own = signed_in(alice).get(reverse("gallery:profile", args=["alice"])).content.decode()
    assert "· saved" in own  # the owner still sees their own flags


def test_my_images_is_highlighted_only_on_my_own_images(alice):
    mine = store_image(alice, "public", seed=4)
    theirs = store_image(User.objects.create_user("bob", "bob@example.com", PASSWORD), "public", seed=5)
    client = signed_in(alice)

    def current(pk):
        return [item["label"] for item in client.get(reverse("gallery:image", args=[pk])).context["nav_items"]
                if item["active"]]

    assert current(mine.pk) == ["My images"]
    assert current(theirs.pk) == []


# --- Navigation, admin ------------------------------------------------------------------------

def test_the_account_menu_links_my_reports_and_the_admin_carries_the_site_name(alice):
    page = signed_in(alice).get(reverse("accounts:profile")).content.decode()
    assert reverse("moderation:my_reports") in page
    staff = User.objects.create_user("stan", "stan@example.com", PASSWORD, is_staff=True, is_superuser=True)
    admin_page = signed_in(staff).get(reverse("admin:index")).content.decode()
    assert "ldmsite administration" in admin_page


def test_a_new_avatar_replaces_the_old_file_and_can_be_removed(alice):
    client = signed_in(alice)
    fields = {"first_name": "", "email": "alice@example.com"}
    for color in ((10, 10, 10), (250, 250, 250)):
        client.post(reverse("accounts:profile"), {**fields, "profile-avatar": SimpleUploadedFile(
            "a.png", png_bytes(color=color), content_type="image/png")})
        if color == (10, 10, 10):
            first = Profile.objects.get(user=alice).avatar.name
    profile = Profile.objects.get(user=alice)
    assert profile.avatar.name != first and not profile.avatar.storage.exists(first)
    client.post(reverse("accounts:profile"), {**fields, "profile-remove_avatar": "on"})
    profile.refresh_from_db()
    assert not profile.avatar
    assert Client().get(reverse("accounts:avatar", args=["alice"])).status_code == 404
