"""A1111's options: the model a token chose, and the few settings ldmsite has (all fixed).

Options are per token (A1111's are per server). Everything GET /options reports is accepted back
unchanged by POST /options and by txt2img's ``override_settings``; ``sd_model_checkpoint`` picks
the model, and a setting ldmsite cannot change is refused (422, named) only when a different
value is asked for.
"""

from __future__ import annotations

import math
from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from generation.admission import Refusal
from generation.diffusion.request import real_number
from generation.models import DiffusionModel

from .base import A1111View, null_response, shown
from .names import checkpoint_title, find_checkpoint, model_hashes

# The settings ldmsite has, at the only values it has them (A1111's option names).
FIXED_OPTIONS = {
    "sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1, "eta_noise_seed_delta": 0, "samples_format": "png",
    "eta_ddim": 0.0, "eta_ancestral": 1.0, "s_churn": 0.0, "s_tmin": 0.0, "s_tmax": 0.0, "s_noise": 1.0,
    "s_min_uncond": 0.0,
}


def same_value(value: Any, allowed: tuple) -> bool:
    """Whether `value` is one of `allowed` as A1111 would read it (5 == 5.0 == "5" for numbers)."""
    for choice in allowed:
        if isinstance(choice, bool) or choice is None or isinstance(choice, (list, dict, str)):
            if value == choice and type(value) is type(choice):
                return True
        elif not isinstance(value, bool) and isinstance(value, (int, float, str)):
            try:
                number = real_number(value)  # bounded before converting: no overflow on a 400-digit int
            except (TypeError, ValueError):
                continue
            if math.isclose(number, float(choice)):
                return True
    return False


def selected_model(token) -> DiffusionModel | None:
    """The model this token chose with POST /options, if it is still enabled; else the default."""
    chosen = find_checkpoint((getattr(token, "a1111_options", None) or {}).get("sd_model_checkpoint"))
    return chosen or DiffusionModel.default()


def reported_options(token) -> dict:
    model = selected_model(token)
    _, sha256 = model_hashes(model) if model else (None, None)
    return {"sd_model_checkpoint": checkpoint_title(model) if model else None, "sd_checkpoint_hash": sha256,
            **FIXED_OPTIONS}


def check_options(options: Any, token, where: str) -> tuple[dict[str, str], DiffusionModel | None]:
    """Errors for options ldmsite cannot honour, and the model `sd_model_checkpoint` names (if any)."""
    if options is None:
        return {}, None
    if not isinstance(options, dict):
        return {where.rstrip("."): "must be an object of option: value"}, None
    errors: dict[str, str] = {}
    model = None
    if "sd_model_checkpoint" in options:
        model = find_checkpoint(options["sd_model_checkpoint"])
        if model is None:
            titles = [checkpoint_title(m) for m in DiffusionModel.objects.filter(enabled=True)]
            errors[f"{where}sd_model_checkpoint"] = (f"unknown model {shown(options['sd_model_checkpoint'])}; "
                                                     f"available: {', '.join(titles) or 'none'}")
    current = selected_model(token)
    for key, value in options.items():
        if key == "sd_model_checkpoint":
            continue
        if key == "sd_checkpoint_hash":
            hashes = {model_hashes(m)[1] for m in (current, model) if m is not None} or {None}
            if not (value is None or isinstance(value, str)) or (value.lower() if value else value) not in hashes:
                errors[f"{where}{key}"] = ("ldmsite cannot change this option (it is the chosen model's sha256); "
                                           "choose a model with sd_model_checkpoint")
        elif key in FIXED_OPTIONS:
            if not same_value(value, (FIXED_OPTIONS[key],)):
                errors[f"{where}{key}"] = f"ldmsite cannot change this option; it is {FIXED_OPTIONS[key]!r}"
        else:
            errors[f"{where}{key}"] = "ldmsite does not support this option"
    return errors, model


def remember_option(token, key: str, value: Any) -> None:
    """Keep an option on the request's access token (A1111's options are per server; here per token)."""
    options = dict(token.a1111_options or {})
    options[key] = value
    type(token).objects.filter(pk=token.pk).update(a1111_options=options)
    token.a1111_options = options


def remember_model(token, model: DiffusionModel) -> None:
    """The model stays chosen by its slug, which outlives a change of its hash (and so of its title)."""
    remember_option(token, "sd_model_checkpoint", model.slug)


OptionsSerializer = inline_serializer("A1111Options", {
    "sd_model_checkpoint": serializers.CharField(allow_null=True, help_text="The title from sd-models"),
    "sd_checkpoint_hash": serializers.CharField(allow_null=True, help_text="The model's sha256 (as sd-models)"),
    "sd_vae": serializers.CharField(), "CLIP_stop_at_last_layers": serializers.IntegerField(),
    "eta_noise_seed_delta": serializers.IntegerField(), "samples_format": serializers.CharField(),
    "eta_ddim": serializers.FloatField(), "eta_ancestral": serializers.FloatField(),
    "s_churn": serializers.FloatField(), "s_tmin": serializers.FloatField(), "s_tmax": serializers.FloatField(),
    "s_noise": serializers.FloatField(), "s_min_uncond": serializers.FloatField(),
})


class Options(A1111View):
    required_scopes = {"POST": "generate"}

    @extend_schema(tags=["a1111"], summary="A1111 options (the few ldmsite has)", responses={200: OptionsSerializer})
    def get(self, request):
        return Response(reported_options(request.auth))

    @extend_schema(tags=["a1111"], summary="Set A1111 options: sd_model_checkpoint picks this token's model",
                   request=inline_serializer("A1111OptionsUpdate", {
                       "sd_model_checkpoint": serializers.CharField(required=False)}),
                   responses={200: OpenApiResponse({"type": "object", "nullable": True},
                                                   description="null, as A1111 answers")},
                   description="The model (a title, name, directory name or hash from sd-models) stays chosen for "
                               "this token's later txt2img requests. Every option GET reports is accepted back "
                               "unchanged; a different value of one ldmsite cannot change answers 422. Needs the "
                               "generate scope.")
    def post(self, request):
        if not isinstance(request.data, dict):
            raise ValidationError({"__all__": "The body must be a JSON object of option: value."})
        errors, model = check_options(request.data, request.auth, "")
        if errors:
            raise Refusal(errors, 422)
        if model is not None:
            remember_model(request.auth, model)
        return null_response()
