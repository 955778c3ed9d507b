"""Sign-up, login, logout, password change, profile, login throttling and navigation."""

import pytest
from django.contrib.auth import get_user_model
from django.urls import reverse

User = get_user_model()
PASSWORD = "violet-lantern-4821"


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", "alice@example.com", PASSWORD)


def sign_up(client, **overrides):
    data = {"username": "bob", "email": "bob@example.com", "password1": PASSWORD, "password2": PASSWORD}
    data.update(overrides)
    return client.post(reverse("accounts:signup"), data)


@pytest.mark.django_db
def test_a_visitor_can_sign_up_and_is_signed_in_afterwards(client):
    response = sign_up(client)
    assert response.status_code == 302
    user = User.objects.get(username="bob")
    assert user.email == "bob@example.com"
    assert user.check_password(PASSWORD)
    home = client.get(reverse("home"))
    assert home.context["user"] == user
    assert "Welcome to ldmsite, bob." in home.content.decode()


@pytest.mark.django_db
def test_a_common_password_is_rejected_with_the_validators_message(client):
    response = sign_up(client, password1="1234", password2="1234")
    assert response.status_code == 200
    assert not User.objects.filter(username="bob").exists()
    page = response.content.decode()
    assert "This password is too short. It must contain at least 8 characters." in page
    assert "This password is entirely numeric." in page


@pytest.mark.django_db
def test_sign_up_requires_a_unique_email_address(client, alice):
    response = sign_up(client, email="ALICE@example.com")
    assert response.status_code == 200
    assert "An account with this email address already exists." in response.content.decode()
    assert not User.objects.filter(username="bob").exists()


def test_a_person_can_log_in_and_log_out(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 302
    assert client.get(reverse("accounts:profile")).status_code == 200
    response = client.post(reverse("logout"))
    assert response.status_code == 302
    assert client.get(reverse("accounts:profile")).status_code == 302  # back to login


def test_a_wrong_password_shows_an_error_and_does_not_sign_in(client, alice):
    response = client.post(reverse("login"), {"username": "alice", "password": "wrong-password-1"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()
    assert client.get(reverse("accounts:profile")).status_code == 302


def test_repeated_failed_logins_lock_the_account_even_for_the_right_password(client, alice, settings):
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("login"), {"username": "alice", "password": "wrong-password-1"})
    response = client.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    assert client.get(reverse("accounts:profile")).status_code == 302


def test_the_lockout_is_per_username_so_others_can_still_log_in(client, alice, settings):
    User.objects.create_user("carol", "carol@example.com", PASSWORD)
    for _ in range(settings.AXES_FAILURE_LIMIT):
        client.post(reverse("login"), {"username": "alice", "password": "wrong-password-1"})
    response = client.post(reverse("login"), {"username": "carol", "password": PASSWORD})
    assert response.status_code == 302


def test_logout_needs_a_post_so_a_link_cannot_sign_someone_out(client, alice):
    client.force_login(alice)
    assert client.get(reverse("logout")).status_code == 405
    assert client.get(reverse("accounts:profile")).status_code == 200


def test_the_profile_page_shows_and_updates_the_account(client, alice):
    client.force_login(alice)
    page = client.get(reverse("accounts:profile")).content.decode()
    assert 'data-testid="profile-heading">alice</h1>' in page and 'value="alice@example.com"' in page
    response = client.post(reverse("accounts:profile"), {"first_name": "Alice A.", "email": "a@example.com"})
    assert response.status_code == 302
    alice.refresh_from_db()
    assert (alice.first_name, alice.email) == ("Alice A.", "a@example.com")


def test_the_profile_form_rejects_a_bad_email_next_to_the_field(client, alice):
    client.force_login(alice)
    response = client.post(reverse("accounts:profile"), {"first_name": "", "email": "not-an-email"})
    assert response.status_code == 200
    assert 'id="email-errors"' in response.content.decode()
    alice.refresh_from_db()
    assert alice.email == "alice@example.com"


def test_a_person_can_change_their_password(client, alice):
    client.force_login(alice)
    new_password = "quiet-harbour-7319"
    response = client.post(
        reverse("accounts:password_change"),
        {"old_password": PASSWORD, "new_password1": new_password, "new_password2": new_password},
    )
    assert response.status_code == 302
    alice.refresh_from_db()
    assert alice.check_password(new_password)


def test_forms_are_protected_by_csrf(alice):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.post(reverse("login"), {"username": "alice", "password": PASSWORD})
    assert response.status_code == 403


@pytest.mark.django_db
def test_the_menu_offers_sign_up_to_visitors_and_the_account_menu_to_people(client, alice):
    visitor_page = client.get(reverse("home")).content.decode()
    assert reverse("accounts:signup") in visitor_page
    client.force_login(alice)
    page = client.get(reverse("home")).content.decode()
    assert 'data-testid="account-menu"' in page
    assert "Log out" in page
    assert reverse("admin:index") not in page, "only staff see the admin link"


@pytest.mark.django_db
def test_the_health_check_reports_ok(client):
    response = client.get(reverse("healthz"))
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
