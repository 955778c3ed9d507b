"""A1111's txt2img: its whole request body, judged field by field, made into an ordinary job.

Clients send A1111's whole request schema; every field is accepted. A field ldmsite cannot honour
is fine at A1111's default (or wherever its value has no effect, e.g. the hires-fix fields while
`enable_hr` is false), and answers 422 naming it otherwise. Fields A1111 does not know are
ignored, as A1111 ignores them.

Jobs made here are ordinary jobs (`services.submit_generation`): queued fairly, counted against
the same limits, visible in history and on the websocket streams. txt2img is synchronous like
A1111's: it submits, then waits for the job by polling its row (each request has its own thread
under ASGI, so waiting blocks nobody else). An interrupted job answers with the images it stored
(a cancelled job keeps its partial image) and ``"interrupted": true`` in ``info``.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from generation.admission import Refusal
from generation.diffusion import SAMPLERS
from generation.diffusion.request import whole_number
from generation.models import DiffusionModel, Generation
from generation.serializers import GenerationSerializer
from generation.services import submit_generation

from .base import VERSION, A1111View
from .names import OFFERED_SCHEDULES, model_hashes, scheduled_sampler
from .options import check_options, remember_model, same_value, selected_model

Status = Generation.Status
POLL_SECONDS = 0.25
TASK_SECONDS = 24 * 3600  # how long a client's force_task_id names its job (/internal/progress)

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
    "scheduler": (None, Text, {"help_text": f"{', '.join(OFFERED_SCHEDULES)} (A1111's schedule types)"}),
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
    "alwayson_scripts": ({}, serializers.DictField, {"help_text": "Entries that ask nothing ({\"args\": []}) only"}),
    "infotext": (None, Text, {}),
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
}
# Fields with no effect here, whatever their value: the hires-fix and refiner settings while
# those are off, the subseed while its strength is 0, and saving/bookkeeping switches (images
# always go to the person's history; no grids are made).
NO_EFFECT = ("subseed", "denoising_strength", "firstphase_width", "firstphase_height", "hr_scale", "hr_upscaler",
             "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "hr_checkpoint_name", "hr_sampler_name",
             "hr_scheduler", "hr_prompt", "hr_negative_prompt", "refiner_switch_at", "do_not_save_samples",
             "do_not_save_grid", "disable_extra_networks", "comments", "force_task_id",
             "override_settings_restore_afterwards")


def asks_nothing(entry: Any) -> bool:
    """An alwayson_scripts entry that asks its script for nothing: no arguments at all.

    Clients send these to reset extensions between requests (webuiapi: ``{"ControlNet": {"args": []}}``)."""
    if entry is None or entry == [] or entry == {}:
        return True
    return isinstance(entry, dict) and set(entry) <= {"args"} and entry.get("args") in (None, [])


def refused_features(body: dict) -> dict[str, str]:
    errors: dict[str, str] = {}
    for name, allowed in NOT_HONOURED.items():
        if name in body and not same_value(body[name], allowed):
            shown = " or ".join(json.dumps(choice) for choice in allowed)
            errors[name] = f"is not supported by ldmsite; leave it at A1111's default ({shown})"
    scripts = body.get("alwayson_scripts")
    if isinstance(scripts, dict):
        for script, entry in scripts.items():
            if not asks_nothing(entry):
                errors[f"alwayson_scripts.{script}"] = ("ldmsite runs no scripts; an entry may only ask for nothing "
                                                        '({"args": []})')
    elif scripts is not None:
        errors["alwayson_scripts"] = "must be an object of script: {\"args\": [...]}"
    return errors


def image_count(body: dict, errors: dict[str, str]) -> int | None:
    counts = {}
    for name in ("batch_size", "n_iter"):
        value = body.get(name, 1)
        try:
            count = whole_number(1 if value is None else value)
        except (TypeError, ValueError):
            count = 0
        if not 1 <= count <= 100:
            errors[name] = "must be a whole number from 1 to 100"
        else:
            counts[name] = count
    return counts["batch_size"] * counts["n_iter"] if len(counts) == 2 else None


def to_request(body: dict, token) -> tuple[dict, DiffusionModel | None, dict[str, str]]:
    """A1111's txt2img body -> (ldmsite request fields, model, errors named by A1111 field)."""
    errors = refused_features(body)
    option_errors, model = check_options(body.get("override_settings"), token, "override_settings.")
    errors.update(option_errors)
    model = model or selected_model(token)
    fields = {ours: body[theirs] for theirs, ours in MAPPED.items() if theirs in body and body[theirs] is not None}
    count = image_count(body, errors)
    if count is not None:
        fields["num_images"] = count

    # A1111 uses sampler_index (default "Euler") only when sampler_name is empty; when both are
    # absent the model's default sampler applies here (see docs/API.md).
    sampler = body.get("sampler_name") or body.get("sampler_index")
    if sampler is not None and not isinstance(sampler, str):
        errors[sampler_field(body)] = f"must be one of: {', '.join(SAMPLERS)}"
    else:
        if not sampler and body.get("scheduler") and model is not None:
            sampler = model.default_sampler  # the schedule applies to the model's own sampler
        sampler, schedule_error = scheduled_sampler(sampler, body.get("scheduler"))
        if schedule_error:
            errors["scheduler"] = schedule_error
        if sampler:
            fields["sampler"] = sampler
    return fields, model, errors


def sampler_field(body: dict) -> str:
    """The A1111 field the sampler came from, to name it in a refusal."""
    return "sampler_index" if not body.get("sampler_name") and "sampler_index" in body else "sampler_name"


def txt2img_info(job: Generation, images, body: dict) -> dict:
    """A1111's ``info`` (Processed.js()), plus ldmsite's job and image ids."""
    params = job.params
    count = params.get("num_images", 1)
    seeds = [image.seed for image in images] or [params["seed"] + k for k in range(count)]
    recorded = ((images[0].metadata or {}).get("model") or {}) if images else {}
    short = recorded.get("short_hash") or model_hashes(job.model)[0]  # the PNG's "Model hash"
    info = {
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
    if job.status == Status.CANCELLED:
        info["interrupted"] = True
    return info


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


def task_key(user, task_id: str) -> str:
    return f"ldmsite.a1111.task.{user.pk}.{hashlib.sha256(task_id.encode('utf-8', 'replace')).hexdigest()}"


def remember_task(user, task_id: Any, job: Generation) -> None:
    """A client's ``force_task_id`` names its job for A1111's /internal/progress."""
    if isinstance(task_id, str) and task_id:
        cache.set(task_key(user, task_id), job.pk, TASK_SECONDS)


def job_of_task(user, task_id: Any) -> Generation | None:
    if not isinstance(task_id, str) or not task_id:
        return None
    pk = cache.get(task_key(user, task_id))
    if pk is None and task_id.startswith("ldmsite-") and task_id[len("ldmsite-"):].isdigit() \
            and len(task_id) < 30:
        pk = int(task_id[len("ldmsite-"):])  # progress's current_task
    return Generation.objects.filter(owner=user, pk=pk).select_related("model").first() if pk else None


def encoded_images(images) -> list[str]:
    encoded = []
    for image in images:
        with image.file.open("rb") as handle:
            encoded.append(base64.b64encode(handle.read()).decode("ascii"))
    return encoded


Txt2ImgRequestSerializer = type("Txt2ImgRequestSerializer", (serializers.Serializer,), {
    "__doc__": "A1111's StableDiffusionTxt2ImgProcessingAPI (documentation; `to_request` judges it).",
    **{name: documented_field(*spec) for name, spec in TXT2IMG_FIELDS.items()},
})
Txt2ImgResponse = inline_serializer("TextToImageResponse", {
    "images": serializers.ListField(child=serializers.CharField(), help_text="Base64 PNGs, parameters embedded"),
    "parameters": serializers.DictField(help_text="The request as understood, defaults filled in"),
    "info": serializers.CharField(help_text="A JSON string: seeds, infotexts, model, job_id, image_ids; "
                                            "`interrupted: true` when the job was interrupted"),
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
                           "default and answer 422 naming the field otherwise. An interrupted job answers 200 with "
                           "the images it kept. Needs the generate scope.")
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
            renamed = {**ERROR_FIELD, "sampler": sampler_field(body)}
            raise Refusal({renamed.get(k, k): v for k, v in error.errors.items()}, 422) from None
        remember_task(request.user, body.get("force_task_id"), job)
        if body.get("override_settings_restore_afterwards") is False and \
                (body.get("override_settings") or {}).get("sd_model_checkpoint"):
            remember_model(request.auth, model)

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
        images = list(job.images.order_by("index"))  # an interrupted job's: the partial image it kept
        if body.get("save_images") is True:
            for image in images:
                image.set_saved(True)
        encoded = encoded_images(images) if body.get("send_images", True) is not False else []
        return Response({"images": encoded, "parameters": parameters,
                         "info": json.dumps(txt2img_info(job, images, body))})
