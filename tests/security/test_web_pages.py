"""Every page, found through the URL resolver (a new page is checked without editing this file):

- it is served with a Content-Security-Policy that allows no inline script, no event-handler
  attributes and no inline styles, and its HTML has none of them (issue 24, weakness 6);
- it refuses a POST without the CSRF token with 403, and takes one with the token (every form);
- uploaded media are never served from /media/: only views that check who may see a file serve it.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.template.loader import render_to_string
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from gallery.moderation_models import BlocklistEntry, FlaggedPrompt
from generation.services import submit_generation
from ldmsite.accounts.tokens import create_token
from tests.security.conftest import signed_in

API_PREFIXES = ("api/", "sdapi/", "internal/", "^(?:api|sdapi|internal)/")
PARAMETER = re.compile(r"<(?:(?P<converter>[^>:]+):)?(?P<name>[^>]+)>")


def walk(patterns=None, prefix: str = "", namespace: str = ""):
    """(route, name, view) of every URL pattern, nested includes flattened."""
    for pattern in get_resolver().url_patterns if patterns is None else patterns:
        if isinstance(pattern, URLResolver):
            inner = f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern), inner)
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), namespace + (pattern.name or ""), pattern.callback


def page_routes() -> list[tuple[str, str]]:
    """(route, name) of the site's pages: everything but the APIs, regex routes and admin pages with
    parameters (Django's admin is checked through its parameterless pages)."""
    routes = []
    for route, name, _ in walk():
        if route.startswith(API_PREFIXES) or route.startswith("^") or "(?P" in route:
            continue
        if route.startswith("admin/") and "<" in route:
            continue
        routes.append((route, name))
    return routes


@pytest.fixture
def site(people, things, model):
    """One of everything a page can be about, owned by the owner; the staff member looks."""
    owner, staff = people["owner"], people["staff"]
    job = submit_generation(owner, {"prompt": "a red circle", "steps": 2})
    entry = BlocklistEntry.objects.create(pattern="forbidden")
    flagged = FlaggedPrompt.objects.create(user=owner, prompt="forbidden fruit", entry=entry, pattern="forbidden",
                                           matched="forbidden")
    token, _ = create_token(staff, "script", ["read"])
    return {"generations/": job.pk, "images/": things["public"].pk, "albums/": things["album"].pk,
            "moderation/images/": things["public"].pk, "moderation/flagged/": flagged.pk,
            "moderation/blocklist/": entry.pk, "accounts/tokens/": token.pk, "username": owner.username}


def url_of(route: str, objects: dict) -> str:
    """The route with its parameters filled in with real objects (a made-up id where none fits)."""
    def value(match):
        if match["name"] in ("username",):
            return objects["username"]
        fits = [prefix for prefix in objects if prefix.endswith("/") and route.startswith(prefix)]
        return str(objects[max(fits, key=len)]) if fits else "1"
    return "/" + PARAMETER.sub(value, route)


class InlineCode(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, on…= handlers, style attributes and
    elements, javascript: URLs."""

    def __init__(self):
        super().__init__()
        self.found: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if tag == "script" and "src" not in attributes and attributes.get("type") != "application/json":
            self.found.append("inline <script>")
        if tag == "style":
            self.found.append("<style> element")
        for name, value in attrs:
            if name.startswith("on"):
                self.found.append(f"{tag} {name}=")
            if name == "style":
                self.found.append(f"{tag} style=")
            if name in ("href", "src", "action", "formaction") and (value or "").strip().lower().startswith(
                    "javascript:"):
                self.found.append(f"{tag} {name}=javascript:")


def directives(policy: str) -> dict[str, list[str]]:
    return {part.split()[0]: part.split()[1:] for part in policy.split(";") if part.strip()}


def test_the_walk_finds_the_pages_and_their_forms():
    names = {name for _, name in page_routes()}
    assert {"home", "login", "generation:generate", "generation:cancel", "gallery:like", "gallery:edit_album",
            "moderation:suspend", "moderation:blocklist", "accounts:tokens", "accounts:token_revoke",
            "admin:index"} <= names


# --- Content-Security-Policy ----------------------------------------------------------------------

def test_the_policy_forbids_inline_script_and_style_and_foreign_sources():
    policy = settings.CONTENT_SECURITY_POLICY["DIRECTIVES"]
    for directive in ("script-src", "style-src", "default-src", "connect-src"):
        assert policy[directive] == ["'self'"], directive
    for directive in ("script-src", "style-src", "default-src", "img-src", "connect-src"):
        assert not {"'unsafe-inline'", "'unsafe-eval'", "*", "http:", "https:"} & set(policy.get(directive, []))
    assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
    assert policy["base-uri"] == ["'none'"]


@pytest.mark.parametrize("who", ["anonymous", "owner", "staff"])
@pytest.mark.parametrize("route, name", page_routes())
def test_every_page_is_served_with_the_policy_and_has_no_inline_code(site, people, who, route, name):
    client = Client() if who == "anonymous" else signed_in(people[who])
    response = client.get(url_of(route, site))
    assert response.status_code < 500, response.status_code
    policy = directives(response["Content-Security-Policy"])
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    if response.status_code == 200 and response["Content-Type"].startswith("text/html"):
        parser = InlineCode()
        parser.feed(response.content.decode())
        assert not parser.found, f"{name}: {parser.found}"


@pytest.mark.parametrize("template", ["500.html", "404.html", "403.html"])
def test_the_error_pages_have_no_inline_code_either(template):
    parser = InlineCode()
    parser.feed(render_to_string(template))
    assert not parser.found


def test_the_api_docs_load_swagger_ui_from_the_site_itself(client):
    response = client.get("/api/docs/")
    assert response.status_code == 200
    page = response.content.decode()
    sources = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert any("swagger-ui-bundle.js" in source for source in sources)
    assert all(source.startswith("/") and not source.startswith("//") for source in sources), sources
    parser = InlineCode()
    parser.feed(page)
    assert not parser.found
    for source in sources:
        assert client.get(source).status_code == 200, source


# --- CSRF: every form -----------------------------------------------------------------------------

@pytest.mark.parametrize("route, name", page_routes())
def test_every_page_refuses_a_post_without_the_csrf_token(site, people, route, name):
    url = url_of(route, site)
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(people["staff"])
    refused = strict.post(url, {"prompt": "a red circle", "username": "olive", "password": "x"})
    assert refused.status_code == 403, (name, refused.status_code)
    assert b"CSRF" in refused.content
    # The token is what was missing: with it the same request is not refused for CSRF.
    strict.get("/")  # sets the CSRF cookie
    token = strict.cookies[settings.CSRF_COOKIE_NAME].value
    accepted = strict.post(url, {"csrfmiddlewaretoken": token, "prompt": "a red circle"})
    assert not (accepted.status_code == 403 and b"CSRF" in accepted.content), name


# --- Media are never served directly --------------------------------------------------------------

def test_media_files_are_not_served_from_the_media_url(things, people, client):
    image = things["public"]
    assert default_storage.exists(image.file.name)
    for who in (client, signed_in(people["owner"]), signed_in(people["staff"])):
        for path in (f"{settings.MEDIA_URL}{image.file.name}", f"/media/{image.file.name}"):
            response = who.get(path)
            assert response.status_code == 404, (path, response.status_code)
            assert not getattr(response, "streaming", False)
    # The permission-checked view serves it, and only to those who may see it.
    private = things["private"]
    assert signed_in(people["owner"]).get(f"/images/{private.pk}/file").status_code == 200
    assert signed_in(people["other"]).get(f"/images/{private.pk}/file").status_code == 404


def test_no_route_and_no_static_directory_exposes_the_media_folder():
    media = settings.MEDIA_URL.strip("/")
    assert all(not route.lstrip("^").startswith(media) for route, _, _ in walk())
    static_dirs = [str(path) for path in settings.STATICFILES_DIRS] + [str(settings.STATIC_ROOT)]
    assert all(not str(settings.MEDIA_ROOT).startswith(directory) and not directory.startswith(
        str(settings.MEDIA_ROOT)) for directory in static_dirs)


def test_a_file_dropped_into_the_media_folder_is_not_served(client):
    name = default_storage.save("loose.txt", ContentFile(b"secret"))
    assert client.get(f"/media/{name}").status_code == 404
    assert client.get(f"/static/../media/{name}").status_code == 404
