"""The "API tokens" page: create (shown once), list, revoke personal access tokens."""

from __future__ import annotations

import base64
import secrets
from datetime import timedelta

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from ldmsite.accounts.models import AccessToken
from ldmsite.accounts.tokens import DEFAULT_SCOPES, create_token, revoke_token

EXPIRY_CHOICES = [("", "Never"), ("7", "In 7 days"), ("30", "In 30 days"), ("90", "In 90 days"),
                  ("365", "In a year")]


class TokenForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What it is for, e.g. “my render script”.")
    scopes = forms.MultipleChoiceField(choices=AccessToken.Scope.choices, widget=forms.CheckboxSelectMultiple,
                                       initial=list(DEFAULT_SCOPES))
    expires_in = forms.ChoiceField(label="Expires", choices=EXPIRY_CHOICES, required=False, initial="90")

    def expires_at(self):
        days = self.cleaned_data.get("expires_in")
        return timezone.now() + timedelta(days=int(days)) if days else None


# After a token is created the page redirects (Post/Redirect/Get), so a reload cannot create a second
# one. The token must reach the next GET without being stored anywhere usable: it is split with a
# one-time pad. The session (the database) keeps the token XOR a random pad, and the browser keeps the
# pad in a short-lived HttpOnly cookie limited to this page; neither half alone is the token, it is
# never in a URL or a log, and the GET that shows it deletes both halves.
NEW_TOKEN_KEY = "accounts.new_token"
PAD_COOKIE = "ldm_new_token_pad"


def split_token(raw: str) -> tuple[str, str]:
    data = raw.encode()
    pad = secrets.token_bytes(len(data))
    sealed = bytes(a ^ b for a, b in zip(data, pad))
    return sealed.hex(), base64.urlsafe_b64encode(pad).decode()


def join_token(sealed: str, pad: str) -> str | None:
    try:
        data, key = bytes.fromhex(sealed), base64.urlsafe_b64decode(pad.encode())
    except (ValueError, TypeError):
        return None
    if len(data) != len(key):
        return None
    try:
        return bytes(a ^ b for a, b in zip(data, key)).decode()
    except UnicodeDecodeError:
        return None


def page(request, form, created=None, raw=None, status=200):
    tokens = AccessToken.objects.filter(user=request.user)
    response = render(request, "accounts/tokens.html",
                      {"form": form, "tokens": tokens, "created": created, "raw_token": raw}, status=status)
    response["Cache-Control"] = "no-store"  # a token shown once must not linger in any cache
    return response


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request):
    if request.method == "GET":
        # The GET after creating a token joins its two halves once and forgets both, so a reload
        # neither repeats the POST nor shows the token again.
        pending = request.session.pop(NEW_TOKEN_KEY, None)
        pad = request.COOKIES.get(PAD_COOKIE)
        created = raw = None
        if pending and pad:
            created = AccessToken.objects.filter(pk=pending.get("pk"), user=request.user).first()
            raw = join_token(pending.get("sealed", ""), pad) if created is not None else None
        response = page(request, TokenForm(), created=created if raw else None, raw=raw)
        if pad is not None:
            response.delete_cookie(PAD_COOKIE, path=reverse("accounts:tokens"), samesite="Strict")
        return response
    form = TokenForm(request.POST)
    if not form.is_valid():
        return page(request, form, status=400)
    try:
        token, raw = create_token(request.user, form.cleaned_data["name"], form.cleaned_data["scopes"],
                                  form.expires_at())
    except ValueError as error:
        form.add_error(None, str(error))
        return page(request, form, status=400)
    sealed, pad = split_token(raw)
    request.session[NEW_TOKEN_KEY] = {"pk": token.pk, "sealed": sealed}
    response = redirect("accounts:tokens")
    response.set_cookie(PAD_COOKIE, pad, max_age=300, path=reverse("accounts:tokens"), httponly=True,
                        samesite="Strict", secure=request.is_secure())
    return response


@login_required
@require_POST
def revoke(request, pk):
    token = AccessToken.objects.filter(pk=pk, user=request.user).first()
    if token is None:
        raise Http404("No such token")
    revoke_token(token)
    messages.success(request, f"Token “{token.name}” revoked; requests using it are refused from now on.")
    return redirect("accounts:tokens")
