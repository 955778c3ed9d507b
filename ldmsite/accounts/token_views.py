"""The "API tokens" page: create (shown once), list, revoke personal access tokens."""

from __future__ import annotations

from datetime import timedelta

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404
from django.shortcuts import redirect, render
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


def page(request, form, created=None, raw=None, status=200):
    tokens = AccessToken.objects.filter(user=request.user)
    response = render(request, "accounts/tokens.html",
                      {"form": form, "tokens": tokens, "created": created, "raw_token": raw}, status=status)
    if raw:
        response["Cache-Control"] = "no-store"  # the token must not linger in any cache
    return response


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request):
    if request.method == "GET":
        return page(request, TokenForm())
    form = TokenForm(request.POST)
    if not form.is_valid():
        return page(request, form, status=400)
    try:
        token, raw = create_token(request.user, form.cleaned_data["name"], form.cleaned_data["scopes"],
                                  form.expires_at())
    except ValueError as error:
        form.add_error(None, str(error))
        return page(request, form, status=400)
    # Rendered, not redirected: the token is shown this once and stored nowhere (not even the session).
    return page(request, TokenForm(), created=token, raw=raw, status=201)


@login_required
@require_POST
def revoke(request, pk):
    token = AccessToken.objects.filter(pk=pk, user=request.user).first()
    if token is None:
        raise Http404("No such token")
    revoke_token(token)
    messages.success(request, f"Token “{token.name}” revoked; requests using it are refused from now on.")
    return redirect("accounts:tokens")
