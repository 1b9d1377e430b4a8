"""The account page where a signed-in user creates, names and revokes API tokens."""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from predictions.api.models import ApiToken
from predictions.api.tokens import token_create, token_revoke


class TokenForm(forms.Form):
    name = forms.CharField(
        label="Name", max_length=100, help_text="What the token is for, e.g. “laptop script”."
    )


@login_required
@require_http_methods(["GET", "POST"])
def tokens(request: HttpRequest) -> HttpResponse:
    """The user's tokens; a new one is shown once, on the page that answers its creation."""
    form = TokenForm(request.POST or None)
    new_key = ""
    status = 200
    if request.method == "POST":
        if form.is_valid():
            token, new_key = token_create(user=request.user, name=form.cleaned_data["name"])
            form = TokenForm()
            status = 201
        else:
            status = 400
    context = {"form": form, "new_key": new_key, "tokens": ApiToken.objects.filter(user=request.user)}
    response = render(request, "api/tokens.html", context, status=status)
    response["Cache-Control"] = "no-store"  # the page may hold a new key
    return response


@login_required
@require_POST
def revoke(request: HttpRequest, token_id: int) -> HttpResponse:
    if token_revoke(user=request.user, token_id=token_id):
        messages.success(request, "Token revoked: programs using it are refused from now on.")
    else:
        messages.info(request, "That token was already revoked.")
    return redirect("api:tokens")
