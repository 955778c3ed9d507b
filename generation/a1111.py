"""The AUTOMATIC1111 web UI API, the subset scripts and tools use: /sdapi/v1/.

Request and response bodies are A1111's own, so existing clients work unchanged. Clients
send A1111's whole request schema; every field is accepted. A field ldmsite cannot honour
is fine at A1111's default (or wherever its value has no effect, e.g. the hires-fix fields
while `enable_hr` is false), and answers 422 naming it otherwise. Fields A1111 does not
know are ignored, as A1111 ignores them.

Jobs made here are ordinary jobs (`services.submit_generation`): queued fairly, counted
against the same limits, visible in history and on the websocket streams. txt2img is
synchronous like A1111's: it submits, then waits for the job by polling its row (each
request has its own thread under ASGI, so waiting blocks nobody else).

Auth: a personal access token, as `Authorization: Bearer <token>` or as the password of
HTTP Basic (any user name) — most A1111 clients can only do Basic.
"""

from __future__ import annotations

import base64
import json
import math
import re
import time
from typing import Any

from django.conf import settings
from django.http import HttpResponse
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from generation.admission import Refusal
from generation.diffusion import SAMPLERS
from generation.models import DiffusionModel, Generation
from generation.queue import average_job_seconds, queue_position
from generation.serializers import GenerationSerializer
from generation.services import cancel_generation, submit_generation

Status = Generation.Status
POLL_SECONDS = 0.25
VERSION = "ldmsite"

# A1111's txt2img request (StableDiffusionTxt2ImgProcessingAPI, v1.10): each field, its default and
# the field type that documents it (null default: "use the option"). Both the defaults echoed back
# (`echo_parameters`) and the OpenAPI request schema (`Txt2ImgRequestSerializer`) come from here.
Text, Integer, Real, Flag = serializers.CharField, serializers.IntegerField, serializers.FloatField, \
    serializers.BooleanField
TXT2IMG_FIELDS: dict[str, tuple[Any, type[serializers.Field], dict]] = {
    "prompt": ("", Text, {}), "negative_prompt": ("", Text, {}),
    "styles": (None, serializers.ListField, {"child": Text()}),
    "seed": (-1, Integer, {}), "subseed": (-1, Integer, {}), "subseed_strength": (0, Real, {}),
    "seed_resize_from_h": (-1, Integer, {}), "seed_resize_from_w": (-1, Integer, {}),
    "sampler_name": (None, Text, {"help_text": ", ".join(SAMPLERS)}),
    "scheduler": (None, Text, {"help_text": "Automatic or Karras"}),
    "batch_size": (1, Integer, {}), "n_iter": (1, Integer, {}), "steps": (50, Integer, {}),
    "cfg_scale": (7.0, Real, {}), "width": (512, Integer, {}), "height": (512, Integer, {}),
    "restore_faces": (None, Flag, {}), "tiling": (None, Flag, {}),
    "do_not_save_samples": (False, Flag, {}), "do_not_save_grid": (False, Flag, {}),
    "eta": (None, Real, {}), "denoising_strength": (None, Real, {}), "s_min_uncond": (None, Real, {}),
    "s_churn": (None, Real, {}), "s_tmax": (None, Real, {}), "s_tmin": (None, Real, {}), "s_noise": (None, Real, {}),
    "override_settings": (None, serializers.DictField, {}),
    "override_settings_restore_afterwards": (True, Flag, {}),
    "refiner_checkpoint": (None, Text, {}), "refiner_switch_at": (None, Real, {}),
    "disable_extra_networks": (False, Flag, {}), "firstpass_image": (None, Text, {}),
    "comments": (None, serializers.DictField, {}), "enable_hr": (False, Flag, {}),
    "firstphase_width": (0, Integer, {}), "firstphase_height": (0, Integer, {}), "hr_scale": (2.0, Real, {}),
    "hr_upscaler": (None, Text, {}), "hr_second_pass_steps": (0, Integer, {}), "hr_resize_x": (0, Integer, {}),
    "hr_resize_y": (0, Integer, {}), "hr_checkpoint_name": (None, Text, {}), "hr_sampler_name": (None, Text, {}),
    "hr_scheduler": (None, Text, {}), "hr_prompt": ("", Text, {}), "hr_negative_prompt": ("", Text, {}),
    "force_task_id": (None, Text, {}), "sampler_index": ("Euler", Text, {}), "script_name": (None, Text, {}),
    "script_args": ([], serializers.ListField, {}), "send_images": (True, Flag, {}),
    "save_images": (False, Flag, {"help_text": "true: keep the images (saved) in your history"}),
    "alwayson_scripts": ({}, serializers.DictField, {}), "infotext": (None, Text, {}),
}
TXT2IMG_DEFAULTS: dict[str, Any] = {name: default for name, (default, _, _) in TXT2IMG_FIELDS.items()}


def documented_field(default: Any, kind: type[serializers.Field], options: dict) -> serializers.Field:
    if default is None:
        return kind(required=False, allow_null=True, **options)
    if isinstance(default, (list, dict)):
        return kind(required=False, default=type(default), **options)  # a fresh one per request
    if kind is Text:
        options = {"allow_blank": True, **options}
    return kind(required=False, default=default, **options)


# A1111 field -> ldmsite request field (validate_request judges the values).
MAPPED = {"prompt": "prompt", "negative_prompt": "negative_prompt", "steps": "steps", "cfg_scale": "guidance_scale",
          "width": "width", "height": "height", "seed": "seed", "eta": "eta"}
ERROR_FIELD = {ours: theirs for theirs, ours in MAPPED.items()} | {"sampler": "sampler_name",
                                                                   "num_images": "batch_size"}

# Features ldmsite does not have: the values that mean "off" in A1111 (None: A1111's "use the option").
NOT_HONOURED: dict[str, tuple] = {
    "styles": (None, []), "subseed_strength": (None, 0), "seed_resize_from_h": (None, -1, 0),
    "seed_resize_from_w": (None, -1, 0), "restore_faces": (None, False), "tiling": (None, False),
    "s_min_uncond": (None, 0), "s_churn": (None, 0), "s_tmax": (None, 0), "s_tmin": (None, 0),
    "s_noise": (None, 1), "enable_hr": (None, False), "refiner_checkpoint": (None, ""),
    "firstpass_image": (None, ""), "infotext": (None, ""), "script_name": (None, ""), "script_args": (None, []),
    "alwayson_scripts": (None, {}),
}
# Fields with no effect here, whatever their value: the hires-fix and refiner settings while
# those are off, the subseed while its strength is 0, and saving/bookkeeping switches (images
# always go to the person's history; no grids are made).
NO_EFFECT = ("subseed", "denoising_strength", "firstphase_width", "firstphase_height", "hr_scale", "hr_upscaler",
             "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "hr_checkpoint_name", "hr_sampler_name",
             "hr_scheduler", "hr_prompt", "hr_negative_prompt", "refiner_switch_at", "do_not_save_samples",
             "do_not_save_grid", "disable_extra_networks", "comments", "force_task_id",
             "override_settings_restore_afterwards")

SCHEDULERS = [
    {"name": "automatic", "label": "Automatic", "aliases": None, "default_rho": -1.0, "need_inner_model": False},
    {"name": "karras", "label": "Karras", "aliases": None, "default_rho": 7.0, "need_inner_model": False},
]


def same_value(value: Any, allowed: tuple) -> bool:
    for choice in allowed:
        if isinstance(choice, bool) or choice is None or isinstance(choice, (list, dict, str)):
            if value == choice and type(value) is type(choice):
                return True
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if math.isclose(float(value), float(choice)):
                return True
        elif isinstance(value, str):
            try:
                if math.isclose(float(value), float(choice)):
                    return True
            except ValueError:
                pass
    return False


# --- Models as A1111 names them --------------------------------------------------------------

def model_hashes(model: DiffusionModel) -> tuple[str | None, str | None]:
    """(short hash, sha256) from the content hash recorded at registration."""
    revision = (model.revision or "").lower()
    if re.fullmatch(r"[0-9a-f]{64}", revision):
        return revision[:10], revision
    return (revision[:10] or None), None


def checkpoint_title(model: DiffusionModel) -> str:
    short, _ = model_hashes(model)
    return f"{model.slug} [{short}]" if short else model.slug


def sd_model_item(model: DiffusionModel) -> dict:
    short, sha256 = model_hashes(model)
    return {"title": checkpoint_title(model), "model_name": model.slug, "hash": short, "sha256": sha256,
            "filename": model.source.rstrip("/").split("/")[-1] or model.slug, "config": None}


def find_checkpoint(name: Any) -> DiffusionModel | None:
    """A model by any name A1111 clients use: its title, its name without the hash, its slug or name."""
    if not isinstance(name, str) or not name.strip():
        return None
    wanted = re.sub(r"\s*\[[0-9a-fA-F]*\]\s*$", "", name.strip())
    for model in DiffusionModel.objects.filter(enabled=True):
        if name.strip() == checkpoint_title(model) or wanted in (model.slug, model.name):
            return model
    return None


def selected_model(token) -> DiffusionModel | None:
    """The model this token chose with POST /options, if it is still enabled; else the default."""
    chosen = find_checkpoint((getattr(token, "a1111_options", None) or {}).get("sd_model_checkpoint"))
    return chosen or DiffusionModel.default()


def reported_options(token) -> dict:
    model = selected_model(token)
    short, sha256 = model_hashes(model) if model else (None, None)
    return {
        "sd_model_checkpoint": checkpoint_title(model) if model else None,
        "sd_checkpoint_hash": sha256,
        "sd_vae": "Automatic", "CLIP_stop_at_last_layers": 1, "eta_noise_seed_delta": 0,
        "samples_format": "png", "eta_ddim": 0.0, "eta_ancestral": 1.0,
        "s_churn": 0.0, "s_tmin": 0.0, "s_tmax": 0.0, "s_noise": 1.0, "s_min_uncond": 0.0,
    }


def check_options(options: Any, token, where: str) -> tuple[dict[str, str], DiffusionModel | None]:
    """Errors for options we cannot honour, and the model `sd_model_checkpoint` names (if any)."""
    if options is None:
        return {}, None
    if not isinstance(options, dict):
        return {where.rstrip("."): "must be an object of option: value"}, None
    errors: dict[str, str] = {}
    model = None
    ours = reported_options(token)
    for key, value in options.items():
        if key == "sd_model_checkpoint":
            model = find_checkpoint(value)
            if model is None:
                titles = [checkpoint_title(m) for m in DiffusionModel.objects.filter(enabled=True)]
                errors[f"{where}{key}"] = f"unknown model {value!r}; available: {', '.join(titles) or 'none'}"
        elif key in ours and key != "sd_checkpoint_hash" and same_value(value, (ours[key],)):
            continue
        elif key in ours and key != "sd_checkpoint_hash":
            errors[f"{where}{key}"] = f"ldmsite cannot change this option; it is {ours[key]!r}"
        else:
            errors[f"{where}{key}"] = "ldmsite does not support this option"
    return errors, model


# --- txt2img ---------------------------------------------------------------------------------------

def to_request(body: dict, token) -> tuple[dict, DiffusionModel | None, dict[str, str]]:
    """A1111's txt2img body -> (ldmsite request fields, model, errors named by A1111 field)."""
    errors: dict[str, str] = {}
    for name, allowed in NOT_HONOURED.items():
        if name in body and not same_value(body[name], allowed):
            shown = "null" if allowed[0] is None and len(allowed) == 1 else " or ".join(
                json.dumps(choice) for choice in allowed)
            errors[name] = f"is not supported by ldmsite; leave it at A1111's default ({shown})"
    fields = {ours: body[theirs] for theirs, ours in MAPPED.items() if theirs in body and body[theirs] is not None}

    counts = {}
    for name in ("batch_size", "n_iter"):
        value = body.get(name, 1)
        if value is None:
            value = 1
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).strip().isdigit() \
                or not 1 <= int(value) <= 100:
            errors[name] = "must be a whole number of at least 1"
        else:
            counts[name] = int(value)
    if len(counts) == 2:
        fields["num_images"] = counts["batch_size"] * counts["n_iter"]

    # A1111 uses sampler_index (default "Euler") only when sampler_name is empty; when both are
    # absent the model's default sampler applies here (see docs/API.md).
    sampler = body.get("sampler_name") or body.get("sampler_index")
    scheduler = body.get("scheduler")
    if sampler is not None and not isinstance(sampler, str):
        errors["sampler_name"] = f"must be one of: {', '.join(SAMPLERS)}"
    elif scheduler not in (None, "") and (not isinstance(scheduler, str)
                                          or scheduler.strip().lower() not in ("automatic", "karras")):
        errors["scheduler"] = "ldmsite offers the Automatic and Karras schedules only"
    else:
        if sampler and isinstance(scheduler, str) and scheduler.strip().lower() == "karras" \
                and not sampler.strip().lower().endswith("karras"):
            karras = f"{sampler.strip()} Karras"
            if karras.lower() not in {name.lower() for name in SAMPLERS}:
                errors["scheduler"] = f"the Karras schedule is not available with {sampler!r}"
            sampler = karras
        if sampler:
            fields["sampler"] = sampler

    option_errors, model = check_options(body.get("override_settings"), token, "override_settings.")
    errors.update(option_errors)
    if model is None:
        model = selected_model(token)
    return fields, model, errors


def txt2img_info(job: Generation, images, body: dict) -> dict:
    params = job.params
    count = params.get("num_images", 1)
    seeds = [image.seed for image in images] or [params["seed"] + k for k in range(count)]
    short, _ = model_hashes(job.model)
    return {
        "prompt": params["prompt"], "all_prompts": [params["prompt"]] * len(seeds),
        "negative_prompt": params.get("negative_prompt", ""),
        "all_negative_prompts": [params.get("negative_prompt", "")] * len(seeds),
        "seed": seeds[0], "all_seeds": seeds, "subseed": seeds[0], "all_subseeds": seeds, "subseed_strength": 0,
        "width": params["width"], "height": params["height"], "sampler_name": params["sampler"],
        "cfg_scale": params["guidance_scale"], "steps": params["steps"],
        "batch_size": body.get("batch_size") or 1, "restore_faces": False, "face_restoration_model": None,
        "sd_model_name": job.model.slug, "sd_model_hash": short, "sd_vae_name": None, "sd_vae_hash": None,
        "seed_resize_from_w": -1, "seed_resize_from_h": -1, "denoising_strength": None,
        # Where A1111 lists what extensions added: the model's default autoguidance, when it had one.
        "extra_generation_params": ({"Autoguidance scale": params["autoguidance_scale"]}
                                    if params.get("autoguidance_scale") else {}),
        "index_of_first_image": 0,
        "infotexts": [image.parameters for image in images], "styles": [],
        "job_timestamp": job.created_at.strftime("%Y%m%d%H%M%S"), "clip_skip": 1,
        "is_using_inpainting_conditioning": False, "version": VERSION,
        # ldmsite's own: where the job and its images live.
        "job_id": job.pk, "status": job.status, "image_ids": [image.pk for image in images],
    }


def echo_parameters(body: dict) -> dict:
    """A1111 answers with the request as it understood it: every field, defaults filled in."""
    return {name: body.get(name, default) for name, default in TXT2IMG_DEFAULTS.items()}


def wait_for(job: Generation, timeout: float) -> Generation:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = Generation.objects.filter(pk=job.pk).values_list("status", flat=True).first()
        if status in Generation.FINAL_STATUSES:
            break
        time.sleep(POLL_SECONDS)
    job.refresh_from_db()
    return job


class A1111View(APIView):
    """Authentication: personal tokens as Basic or Bearer (wired in `ldmsite.api.urls`)."""

    a1111 = True  # refused input answers with A1111's (FastAPI's) 422 body (`ldmsite.api.errors`)


Txt2ImgRequestSerializer = type("Txt2ImgRequestSerializer", (serializers.Serializer,), {
    "__doc__": "A1111's StableDiffusionTxt2ImgProcessingAPI (documentation; `to_request` judges it).",
    **{name: documented_field(*spec) for name, spec in TXT2IMG_FIELDS.items()},
})


Txt2ImgResponse = inline_serializer("TextToImageResponse", {
    "images": serializers.ListField(child=serializers.CharField(), help_text="Base64 PNGs, parameters embedded"),
    "parameters": serializers.DictField(help_text="The request as understood, defaults filled in"),
    "info": serializers.CharField(help_text="A JSON string: seeds, infotexts, model, job_id, image_ids"),
    "detail": serializers.CharField(required=False, help_text="202 only: why the images are not here yet"),
    "job": GenerationSerializer(required=False, help_text="202 only: the job, still queued or running"),
})
A1111Error = inline_serializer("A1111Error", {
    "error": serializers.CharField(), "detail": serializers.CharField(), "body": serializers.CharField(),
    "errors": serializers.CharField(),
})


@extend_schema(tags=["a1111"], summary="A1111 txt2img: generate and wait for the images",
               request=Txt2ImgRequestSerializer,
               responses={200: Txt2ImgResponse,
                          202: OpenApiResponse(Txt2ImgResponse, description="Still running after "
                                               "LDM_A1111_TIMEOUT_SECONDS: the job goes on; see `job` and Location"),
                          500: OpenApiResponse(A1111Error, description="The job failed")},
               description="A1111's request body, whole. Fields ldmsite cannot honour are accepted at A1111's "
                           "default and answer 422 naming the field otherwise. Needs the generate scope.")
class Txt2Img(A1111View):
    required_scopes = {"POST": "generate"}
    throttle_generation = True

    def post(self, request):
        body = request.data
        if not isinstance(body, dict):
            raise ValidationError({"__all__": "The body must be a JSON object (A1111's txt2img request)."})
        fields, model, errors = to_request(body, request.auth)
        if errors:
            raise Refusal(errors, 422)
        if model is None:
            raise Refusal({"override_settings.sd_model_checkpoint": "no model is installed"}, 422)
        try:
            job = submit_generation(request.user, fields, model=model)
        except Refusal as error:
            if error.limit is not None:
                raise
            raise Refusal({ERROR_FIELD.get(k, k): v for k, v in error.errors.items()}, 422) from None
        if body.get("override_settings_restore_afterwards") is False and \
                (body.get("override_settings") or {}).get("sd_model_checkpoint"):
            remember_option(request.auth, "sd_model_checkpoint", checkpoint_title(model))

        job = wait_for(job, settings.LDM_A1111_TIMEOUT_SECONDS)
        parameters = echo_parameters(body)
        if job.status == Status.FAILED:
            return Response({"error": "GenerationFailed", "detail": job.error_message, "body": "",
                             "errors": job.error_message}, status=500)
        if job.is_active:
            data = GenerationSerializer(job, context={"request": request}).data
            return Response({"images": [], "parameters": parameters, "info": json.dumps(txt2img_info(job, [], body)),
                             "detail": f"Job {job.pk} is still {job.status}; it goes on. Fetch it from "
                                       f"{data['url']} or watch {data['websocket_url']}.", "job": data},
                            status=202, headers={"Location": request.build_absolute_uri(data["url"])})
        images = list(job.images.order_by("index"))
        if body.get("save_images") is True:
            for image in images:
                image.set_saved(True)
        encoded = []
        if body.get("send_images", True) is not False:
            for image in images:
                with image.file.open("rb") as handle:
                    encoded.append(base64.b64encode(handle.read()).decode("ascii"))
        return Response({"images": encoded, "parameters": parameters,
                         "info": json.dumps(txt2img_info(job, images, body))})


def remember_option(token, key: str, value: Any) -> None:
    """Keep an option on the request's access token (A1111's options are per server; here per token)."""
    options = dict(token.a1111_options or {})
    options[key] = value
    type(token).objects.filter(pk=token.pk).update(a1111_options=options)
    token.a1111_options = options


# --- progress, interrupt ----------------------------------------------------------------------------

def current_job(user) -> Generation | None:
    """The person's job A1111 would call current: the running one, else the next queued."""
    active = Generation.objects.filter(owner=user).active().select_related("model")
    return (active.filter(status=Status.RUNNING).order_by("started_at", "id").first()
            or active.filter(status=Status.QUEUED).order_by("created_at", "id").first())


ProgressResponse = inline_serializer("ProgressResponse", {
    "progress": serializers.FloatField(help_text="0 to 1"),
    "eta_relative": serializers.FloatField(help_text="Seconds left (estimate)"),
    "state": inline_serializer("ProgressState", {
        "skipped": serializers.BooleanField(), "interrupted": serializers.BooleanField(),
        "stopping_generation": serializers.BooleanField(), "job": serializers.CharField(),
        "job_count": serializers.IntegerField(), "job_timestamp": serializers.CharField(),
        "job_no": serializers.IntegerField(), "sampling_step": serializers.IntegerField(),
        "sampling_steps": serializers.IntegerField(),
    }),
    "current_image": serializers.CharField(allow_null=True, help_text="Always null: previews stream on the "
                                                                      "websocket instead"),
    "textinfo": serializers.CharField(allow_null=True),
    "current_task": serializers.CharField(allow_null=True),
})


@extend_schema(tags=["a1111"], summary="A1111 progress of your current job",
               parameters=[OpenApiParameter("skip_current_image", bool, description="Accepted; no effect")],
               responses={200: ProgressResponse})
class Progress(A1111View):
    def get(self, request):
        user = request.user
        job = current_job(user)
        job_count = Generation.objects.filter(owner=user).active().count()
        progress, eta, step, total, timestamp, name = 0.0, 0.0, 0, 0, "", ""
        if job is not None:
            step, total = job.step, job.total_steps
            timestamp, name = job.created_at.strftime("%Y%m%d%H%M%S"), f"generation {job.pk}"
            if job.status == Status.RUNNING and total:
                progress = min(1.0, step / total)
                elapsed = max(0.0, (time.time() - job.started_at.timestamp())) if job.started_at else 0.0
                eta = elapsed / progress - elapsed if progress > 0 else average_job_seconds(job.model_id)
            else:
                position, wait = queue_position(job)
                eta = (wait or 0.0) + average_job_seconds(job.model_id)
        return Response({
            "progress": round(progress, 4), "eta_relative": round(max(0.0, eta), 2),
            "state": {"skipped": False, "interrupted": bool(job and job.cancel_requested),
                      "stopping_generation": False, "job": name, "job_count": job_count,
                      "job_timestamp": timestamp, "job_no": 0, "sampling_step": step, "sampling_steps": total},
            "current_image": None, "textinfo": None,
            "current_task": f"ldmsite-{job.pk}" if job is not None else None,
        })


@extend_schema(tags=["a1111"], summary="A1111 interrupt: stop your current job", request=None,
               responses={200: inline_serializer("Empty", {})},
               description="Cancels your running job (or, when none runs, your next queued one). "
                           "Needs the generate scope.")
class Interrupt(A1111View):
    required_scopes = {"POST": "generate"}

    def post(self, request):
        running = list(Generation.objects.filter(owner=request.user, status=Status.RUNNING))
        jobs = running or [job for job in [current_job(request.user)] if job is not None]
        for job in jobs:
            cancel_generation(job)
        return Response({})


# --- models, samplers, options --------------------------------------------------------------------

SdModelItem = inline_serializer("SDModelItem", many=True, fields={
    "title": serializers.CharField(), "model_name": serializers.CharField(),
    "hash": serializers.CharField(allow_null=True), "sha256": serializers.CharField(allow_null=True),
    "filename": serializers.CharField(), "config": serializers.CharField(allow_null=True),
})


@extend_schema(tags=["a1111"], summary="A1111 sd-models: the installed models", responses={200: SdModelItem})
class SdModels(A1111View):
    def get(self, request):
        return Response([sd_model_item(model) for model in DiffusionModel.objects.filter(enabled=True)])


SamplerItem = inline_serializer("SamplerItem", many=True, fields={
    "name": serializers.CharField(), "aliases": serializers.ListField(child=serializers.CharField()),
    "options": serializers.DictField(child=serializers.CharField()),
})


@extend_schema(tags=["a1111"], summary="A1111 samplers", responses={200: SamplerItem})
class Samplers(A1111View):
    def get(self, request):
        items = []
        for spec in SAMPLERS.values():
            options = {"scheduler": "karras"} if spec.overrides.get("use_karras_sigmas") else {}
            items.append({"name": spec.name, "aliases": list(spec.aliases), "options": options})
        return Response(items)


SchedulerItem = inline_serializer("SchedulerItem", many=True, fields={
    "name": serializers.CharField(), "label": serializers.CharField(),
    "aliases": serializers.ListField(child=serializers.CharField(), allow_null=True),
    "default_rho": serializers.FloatField(), "need_inner_model": serializers.BooleanField(),
})


@extend_schema(tags=["a1111"], summary="A1111 schedulers (the schedule half of a sampler)",
               responses={200: SchedulerItem})
class Schedulers(A1111View):
    def get(self, request):
        return Response(SCHEDULERS)


OptionsSerializer = inline_serializer("A1111Options", {
    "sd_model_checkpoint": serializers.CharField(allow_null=True, help_text="The title from sd-models"),
    "sd_checkpoint_hash": serializers.CharField(allow_null=True),
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
                   description="The model stays chosen for this token's later txt2img requests. Other options "
                               "are accepted at the value GET reports and answer 422 otherwise. Needs the "
                               "generate scope.")
    def post(self, request):
        if not isinstance(request.data, dict):
            raise ValidationError({"__all__": "The body must be a JSON object of option: value."})
        errors, model = check_options(request.data, request.auth, "")
        if errors:
            raise Refusal(errors, 422)
        if model is not None:
            remember_option(request.auth, "sd_model_checkpoint", checkpoint_title(model))
        return HttpResponse(b"null", content_type="application/json")
