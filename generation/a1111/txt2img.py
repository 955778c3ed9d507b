"""A1111's txt2img: its whole request body, judged field by field, made into an ordinary job.

Clients send A1111's whole request schema; every field is accepted. A field ldmsite cannot honour
is fine at A1111's default (or wherever its value has no effect, e.g. the hires-fix fields while
`enable_hr` is false), and answers 422 naming it otherwise. Fields A1111 does not know are
ignored, as A1111 ignores them. The hires fix maps to ldmsite's own (`enable_hr`, `hr_*`; A1111's
``denoising_strength`` is the second pass's strength here, ldmsite's ``hr_denoising_strength``).

What txt2img and img2img (`img2img`) share lives here too: the common fields (`to_request`),
waiting for the job and answering as A1111 does (`run_job`), ``info`` (`txt2img_info`).

Jobs made here are ordinary jobs (`services.submit_generation`): queued fairly, counted against
the same limits, visible in history and on the websocket streams. txt2img is synchronous like
A1111's: it submits, then waits for the job by polling its row (each request has its own thread
under ASGI, so waiting blocks nobody else). An interrupted job answers with the images it stored
(a cancelled job keeps its partial image) and ``"interrupted": true`` in ``info``.
"""

from __future__ import annotations

import base64
import copy
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
from generation.diffusion.request import HR_UPSCALERS, whole_number
from generation.models import DiffusionModel, Generation
from generation.serializers import GenerationSerializer
from generation.services import submit_generation

from .base import VERSION, A1111View
from .names import OFFERED_SCHEDULES, find_checkpoint, model_hashes, scheduled_sampler
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
    "eta": (None, Real, {}),
    "denoising_strength": (None, Real, {"help_text": "With enable_hr: the second pass's strength (0-1, empty: 0.7)"}),
    "s_min_uncond": (None, Real, {}),
    "s_churn": (None, Real, {}), "s_tmax": (None, Real, {}), "s_tmin": (None, Real, {}), "s_noise": (None, Real, {}),
    "override_settings": (None, serializers.DictField, {}),
    "override_settings_restore_afterwards": (True, Flag, {}),
    "refiner_checkpoint": (None, Text, {}), "refiner_switch_at": (None, Real, {}),
    "disable_extra_networks": (False, Flag, {}), "firstpass_image": (None, Text, {}),
    "comments": (None, serializers.DictField, {}),
    "enable_hr": (False, Flag, {"help_text": "Hires fix: a second pass at hr_scale (or hr_resize_x/y) times the size"}),
    "firstphase_width": (0, Integer, {}), "firstphase_height": (0, Integer, {}),
    "hr_scale": (2.0, Real, {"help_text": "1 to 4"}),
    "hr_upscaler": (None, Text, {"help_text": ", ".join(HR_UPSCALERS) + " (empty: Latent)"}),
    "hr_second_pass_steps": (0, Integer, {"help_text": "0: steps"}),
    "hr_resize_x": (0, Integer, {"help_text": "0: width x hr_scale"}),
    "hr_resize_y": (0, Integer, {"help_text": "0: height x hr_scale"}),
    "hr_checkpoint_name": (None, Text, {"help_text": "Empty or \"Use same checkpoint\" (the same model)"}),
    "hr_sampler_name": (None, Text, {"help_text": "Empty or \"Use same sampler\": sampler_name"}),
    "hr_scheduler": (None, Text, {"help_text": "Empty or \"Use same scheduler\": scheduler"}),
    "hr_prompt": ("", Text, {"help_text": "Empty: prompt"}), "hr_negative_prompt": ("", Text, {}),
    "force_task_id": (None, Text, {}), "sampler_index": ("Euler", Text, {}), "script_name": (None, Text, {}),
    "script_args": ([], serializers.ListField, {}), "send_images": (True, Flag, {}),
    "save_images": (False, Flag, {"help_text": "true: keep the images (saved) in your history"}),
    "alwayson_scripts": ({}, serializers.DictField, {"help_text": "Entries that ask nothing ({\"args\": []}) only"}),
    "infotext": (None, Text, {}),
}
TXT2IMG_DEFAULTS: dict[str, Any] = {name: default for name, (default, _, _) in TXT2IMG_FIELDS.items()}


def documented_field(default: Any, kind: type[serializers.Field], options: dict) -> serializers.Field:
    options = copy.deepcopy(options)  # a child field is bound to one serializer; txt2img and img2img share specs
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
    "s_noise": (None, 1), "refiner_checkpoint": (None, ""),
    "firstpass_image": (None, ""), "infotext": (None, ""), "script_name": (None, ""), "script_args": (None, []),
}
# Fields with no effect here, whatever their value: the hires-fix settings while `enable_hr` is
# false (`hires_fields`), firstphase_width/height (A1111 ignores them too), the refiner's switch
# point without a refiner, the subseed while its strength is 0, and saving/bookkeeping switches
# (images always go to the person's history; no grids are made).
NO_EFFECT = ("subseed", "firstphase_width", "firstphase_height", "refiner_switch_at", "do_not_save_samples",
             "do_not_save_grid", "disable_extra_networks", "comments", "force_task_id",
             "override_settings_restore_afterwards")

# Hires fix (with enable_hr): A1111 field -> ldmsite request field. A1111's txt2img
# denoising_strength is the second pass's strength.
HIRES_MAPPED = {"hr_scale": "hr_scale", "hr_upscaler": "hr_upscaler", "hr_second_pass_steps": "hr_second_pass_steps",
                "hr_resize_x": "hr_resize_x", "hr_resize_y": "hr_resize_y", "hr_prompt": "hr_prompt",
                "hr_negative_prompt": "hr_negative_prompt", "denoising_strength": "hr_denoising_strength"}
# The values A1111's UI sends for "the same as the first pass".
SAME_AS_FIRST_PASS = {"hr_checkpoint_name": "Use same checkpoint", "hr_sampler_name": "Use same sampler",
                      "hr_scheduler": "Use same scheduler"}
TXT2IMG_ERROR_FIELD = {"hr_denoising_strength": "denoising_strength"}


def asks_nothing(entry: Any) -> bool:
    """An alwayson_scripts entry that asks its script for nothing: no arguments at all.

    Clients send these to reset extensions between requests (webuiapi: ``{"ControlNet": {"args": []}}``)."""
    if entry is None or entry == [] or entry == {}:
        return True
    return isinstance(entry, dict) and set(entry) <= {"args"} and entry.get("args") in (None, [])


def refused_features(body: dict, refused: dict[str, tuple]) -> dict[str, str]:
    errors: dict[str, str] = {}
    for name, allowed in refused.items():
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


def to_request(body: dict, token, refused: dict[str, tuple] | None = None
               ) -> tuple[dict, DiffusionModel | None, dict[str, str]]:
    """A1111's txt2img body -> (ldmsite request fields, model, errors named by A1111 field).

    The fields txt2img and img2img share; `refused` is what ldmsite cannot honour (default:
    txt2img's `NOT_HONOURED`). `txt2img_request` adds the hires fix."""
    errors = refused_features(body, NOT_HONOURED if refused is None else refused)
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


def txt2img_request(body: dict, token) -> tuple[dict, DiffusionModel | None, dict[str, str]]:
    """`to_request` plus the hires fix."""
    fields, model, errors = to_request(body, token)
    fields.update(hires_fields(body, fields.get("sampler"), model, errors))
    return fields, model, errors


def uses_same(body: dict, name: str) -> bool:
    value = body.get(name)
    return value is None or value == "" or value == SAME_AS_FIRST_PASS[name]


def hires_fields(body: dict, sampler: str | None, model: DiffusionModel | None, errors: dict[str, str]) -> dict:
    """The hires-fix request fields, when `enable_hr` asks for it (otherwise they have no effect,
    as in A1111). Its second pass runs on the same model."""
    enable = body.get("enable_hr")
    if enable is None or enable is False:
        return {}
    fields = {"enable_hr": enable}  # request validation judges a value that is not true or false
    fields.update({ours: body[theirs] for theirs, ours in HIRES_MAPPED.items() if body.get(theirs) is not None})
    if not uses_same(body, "hr_checkpoint_name") and find_checkpoint(body["hr_checkpoint_name"]) != model:
        errors["hr_checkpoint_name"] = ("ldmsite runs the second pass on the same model; leave it empty or "
                                        f"\"{SAME_AS_FIRST_PASS['hr_checkpoint_name']}\"")
    hr_sampler = None if uses_same(body, "hr_sampler_name") else body["hr_sampler_name"]
    if not uses_same(body, "hr_scheduler"):
        base = hr_sampler or sampler or (model.default_sampler if model is not None else None)
        if isinstance(base, str):  # otherwise hr_sampler_name's own error names it
            scheduled, schedule_error = scheduled_sampler(base, body["hr_scheduler"])
            if schedule_error:
                errors["hr_scheduler"] = schedule_error
            elif scheduled:
                hr_sampler = scheduled
    if hr_sampler is not None:
        fields["hr_sampler_name"] = hr_sampler
    return fields


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
        "seed_resize_from_w": -1, "seed_resize_from_h": -1, "denoising_strength": denoising_strength(params),
        # What A1111 lists beside the main parameters (hires fix, mask), and the model's default
        # autoguidance where A1111 lists what extensions added.
        "extra_generation_params": extra_generation_params(params),
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


def denoising_strength(params: dict) -> float | None:
    """A1111's ``denoising_strength`` in ``info``: img2img's, or the hires fix's second pass's."""
    if params.get("mode", "txt2img") != "txt2img":
        return params.get("denoising_strength")
    return params.get("hr_denoising_strength") if params.get("enable_hr") else None


def extra_generation_params(params: dict) -> dict:
    """The infotext entries A1111 lists in ``extra_generation_params`` for this job's request."""
    extra: dict[str, Any] = {}
    mode = params.get("mode", "txt2img")
    if mode in ("inpaint", "outpaint"):
        extra["Mask blur"] = params.get("mask_blur")
        if params.get("inpaint_full_res"):
            extra["Inpaint area"] = "Only masked"
            extra["Masked area padding"] = params.get("inpaint_full_res_padding")
        if params.get("inpainting_mask_invert"):
            extra["Mask mode"] = "Inpaint not masked"
    if mode == "txt2img" and params.get("enable_hr"):
        if params.get("hr_resize_x") or params.get("hr_resize_y"):
            extra["Hires resize"] = f"{params.get('hr_resize_x')}x{params.get('hr_resize_y')}"
        else:
            extra["Hires upscale"] = params.get("hr_scale")
        if params.get("hr_second_pass_steps"):
            extra["Hires steps"] = params["hr_second_pass_steps"]
        extra["Hires upscaler"] = params.get("hr_upscaler")
        for name, label in (("hr_sampler_name", "Hires sampler"), ("hr_prompt", "Hires prompt"),
                            ("hr_negative_prompt", "Hires negative prompt")):
            if params.get(name):
                extra[label] = params[name]
    if params.get("autoguidance_scale"):
        extra["Autoguidance scale"] = params["autoguidance_scale"]
    return extra


def echo_parameters(body: dict, defaults: dict[str, Any] = TXT2IMG_DEFAULTS) -> dict:
    """A1111 answers with the request as it understood it: every field, defaults filled in."""
    return {name: body.get(name, default) for name, default in defaults.items()}


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
        fields, model, errors = txt2img_request(body, request.auth)
        return run_job(request, body, fields, model, errors, parameters=echo_parameters(body),
                       error_field=TXT2IMG_ERROR_FIELD)


def run_job(request, body: dict, fields: dict, model: DiffusionModel | None, errors: dict[str, str], *,
            parameters: dict, error_field: dict[str, str]) -> Response:
    """Submit the job (or refuse, naming A1111's fields), wait for it, and answer as A1111 does:
    images, `parameters` (the request as understood) and `info`; 202 while it still runs."""
    if errors:
        raise Refusal(errors, 422)
    if model is None:
        raise Refusal({"override_settings.sd_model_checkpoint": "no model is installed"}, 422)
    try:
        job = submit_generation(request.user, fields, model=model)
    except Refusal as error:
        if error.limit is not None:
            raise
        renamed = {**ERROR_FIELD, "sampler": sampler_field(body), **error_field}
        raise Refusal({renamed.get(k, k): v for k, v in error.errors.items()}, 422) from None
    remember_task(request.user, body.get("force_task_id"), job)
    if body.get("override_settings_restore_afterwards") is False and \
            (body.get("override_settings") or {}).get("sd_model_checkpoint"):
        remember_model(request.auth, model)

    job = wait_for(job, settings.LDM_A1111_TIMEOUT_SECONDS)
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
