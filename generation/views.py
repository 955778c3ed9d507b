from datetime import timedelta

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Count
from django.http import Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_http_methods, require_POST

from gallery.models import Image, Lora
from generation import sources
from generation.admission import Refusal
from generation.diffusion import MAX_LORAS, parse_lora_hashes, parse_lora_tags, parse_parameters, read_png_metadata
from generation.diffusion.pngmeta import PngMetadataError
from generation.diffusion.request import INPAINTING_FILLS, RESIZE_MODES, GenerationRequest
from generation.forms import GenerateForm, form_id
from generation.models import DiffusionModel, Generation, WorkerStatus
from generation.services import can_manage, cancel_generation, submit_generation
from generation.snapshots import job_snapshot

Status = Generation.Status


def wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


def add_errors(form, errors: dict) -> None:
    """Put each validator message next to its field (or above the form)."""
    for field, message in errors.items():
        if field in form.fields:
            message = message[:1].upper() + message[1:]
            if message not in form.errors.get(field, []):  # the form's own check may have said it already
                form.add_error(field, message)
        elif field == "__all__":
            form.add_error(None, message)
        else:
            form.add_error(None, f"{field.replace('_', ' ').capitalize()} {message}")


def remix_image(request) -> Image | None:
    """The image ``?remix=<id>`` names, if the person may see it (a `Refusal` naming ``remix`` when
    it is not an id)."""
    image_id = form_id(request.GET.get("remix"), "remix")
    if image_id is None:
        return None
    image = Image.objects.filter(pk=image_id).select_related("generation", "model").first()
    if image is None or not image.can_view(request.user):
        return None
    return image


def remix_params(image: Image | None) -> dict | None:
    """The request fields to start from when remixing ``image``."""
    if image is None:
        return None
    # Through the request class: a field a job was stored without (e.g. autoguidance_scale, added
    # later) gets the value it ran with -- the field's default, not today's model default.
    params = GenerationRequest.from_dict(image.generation.params).to_dict() if image.generation else {}
    params.update(prompt=image.prompt, negative_prompt=image.negative_prompt, seed=image.seed, num_images=1)
    if image.model:
        params["model"] = image.model.slug
    return params


def restore_loras(user, prompt: str, pairs, hashes_text: str = "") -> tuple[str, list, list[str]]:
    """A recorded request's LoRAs for the generate form (Remix, PNG import): (the prompt without its
    ``<lora:...>`` tags, the (name, weight) pairs as ``user`` names them now, a message for each
    LoRA they cannot use). The tags move into the LoRA field rather than staying in the prompt too:
    the validator adds up the weights of a LoRA named twice (A1111 applies each mention), so both
    would double them."""
    prompt, tagged, _ = parse_lora_tags(prompt or "")
    pairs = [(str(name), float(weight)) for name, weight in (pairs or ())] + tagged
    restored, problems = Lora.objects.restore_for(user, pairs[:MAX_LORAS], parse_lora_hashes(hashes_text or ""))
    if len(pairs) > MAX_LORAS:
        problems.append(f"only the first {MAX_LORAS} LoRAs were kept: a request takes at most {MAX_LORAS}")
    return prompt, restored, problems


def remix_loras(image: Image, remix: dict, user) -> list[str]:
    """Put the LoRAs ``image`` was made with into ``remix`` as ``user`` may name them; the messages
    about those they cannot use."""
    hashes = parse_parameters(image.parameters)[1].get("Lora hashes", "") if image.parameters else ""
    remix["prompt"], remix["loras"], problems = restore_loras(user, remix.get("prompt", ""), remix.get("loras"),
                                                              hashes)
    return problems


def remix_source(image: Image | None, user) -> dict:
    """The source a Remix carries over: the gallery image the job started from (``source_image``,
    when the person may see it), else the job's own stored picture (``source_job``, its owner only)."""
    job = image.generation if image is not None else None
    if job is None or not job.init_image:
        return {}
    if job.source_image_id and job.source_image.can_view(user):
        return {"source_image": job.source_image}
    if job.owner_id == user.pk:
        return {"source_job": job}
    return {}


def picked_source_image(request) -> Image | None:
    """``?source_image=<id>`` ("Use as input"): that image, if the person may see it."""
    image_id = form_id(request.GET.get("source_image"), "source_image")
    if image_id is None:
        return None
    image = Image.objects.filter(pk=image_id).first()
    if image is None or not image.can_view(request.user):
        raise Refusal({"source_image": sources.NO_SUCH_IMAGE})
    return image


def source_context(source_image: Image | None = None, source_job: Generation | None = None) -> dict:
    """The generate page's picked source: ``source_image`` (a gallery Image) or ``source_job`` (a job
    of the person's whose stored picture is reused), and ``source_preview_url`` /
    ``source_mask_url`` to show them."""
    context = {"source_image": source_image, "source_job": source_job, "source_preview_url": None,
               "source_mask_url": None}
    if source_image is not None:
        context["source_preview_url"] = source_image.file_url()
    elif source_job is not None:
        context["source_preview_url"] = source_job.source_url("init")
        context["source_mask_url"] = source_job.source_url("mask") if source_job.mask else None
    return context


def posted_request(request, form) -> dict:
    """The raw submission of the generate page: the form's fields (the chosen mode's included) and
    the source: files ``init_image`` / ``mask`` (or the same as data: URLs), ``source_image``
    (a gallery image id) or ``source_job`` (one of the person's job ids)."""
    post = request.POST
    raw = form.request_fields()
    for name in ("init_image", "mask"):
        value = request.FILES.get(name) or post.get(name, "")
        if value:
            raw[name] = value
    for name in ("source_image", "source_job"):
        if post.get(name, "").strip():
            raw[name] = post[name]
    raw["model"] = post.get("model", "")
    return raw


def enabled_models() -> list[DiffusionModel]:
    """The models the generate form offers (only a page that is drawn needs them: not a submit)."""
    return list(DiffusionModel.objects.filter(enabled=True))


@login_required
@require_http_methods(["GET", "POST"])
def generate(request):
    if request.method == "POST":
        form = GenerateForm(request.POST)
        try:
            job = submit_generation(request.user, posted_request(request, form))
        except Refusal as error:
            if wants_json(request):
                return JsonResponse({"errors": error.errors}, status=error.status)
            add_errors(form, error.errors)
            context = {"form": form, "models": enabled_models(), "recent": recent_jobs(request.user),
                       **posted_source_context(request)}
            return render(request, "generation/generate.html", context, status=error.status)
        if wants_json(request):
            return JsonResponse({"job": job_snapshot(job)}, status=202)
        return redirect(job)
    remix, picked = None, {}
    try:
        image = remix_image(request)
        remix = remix_params(image)
        if remix is not None:
            for problem in remix_loras(image, remix, request.user):
                messages.warning(request, problem[:1].upper() + problem[1:] + ".")
        picked = remix_source(image, request.user) if image is not None else {}
        source_image = picked_source_image(request)
        if source_image is not None:  # "Use as input" wins over a Remix's own source
            picked = {"source_image": source_image}
    except Refusal as error:
        for message in error.messages():
            messages.error(request, message)
    default = DiffusionModel.default()
    # ?model=<slug> ("Generate with" on Models & LoRAs) and ?lora=<name> (a LoRA's page) start the
    # form there; a Remix's own model and LoRAs win.
    picked_slug = (remix or {}).get("model") or request.GET.get("model", "")[:100]
    if picked_slug:
        default = DiffusionModel.objects.filter(enabled=True, slug=picked_slug).first() or default
    form = GenerateForm(initial=GenerateForm.initial_for(default, remix))
    if remix is None and request.GET.get("lora"):
        form.initial["loras"] = f"{request.GET['lora'][:100]}:1"
    return render(request, "generation/generate.html", {"form": form, "models": enabled_models(),
                                                        "recent": recent_jobs(request.user),
                                                        **source_context(**picked)})


def posted_source_context(request) -> dict:
    """A refused form shows the gallery image or job it was given again (an uploaded file must be
    chosen again: browsers never refill a file input)."""
    picked = {}
    try:
        image_id = form_id(request.POST.get("source_image"), "source_image")
        job_id = form_id(request.POST.get("source_job"), "source_job")
    except Refusal:
        return source_context()
    if image_id is not None:
        image = Image.objects.filter(pk=image_id).first()
        if image is not None and image.can_view(request.user):
            picked["source_image"] = image
    elif job_id is not None:
        job = Generation.objects.filter(pk=job_id, owner=request.user).first()
        if job is not None and job.init_image:
            picked["source_job"] = job
    return source_context(**picked)


def recent_jobs(user):
    """The person's latest jobs, for the page's list before (or without) its script."""
    return Generation.objects.filter(owner=user).select_related("model").order_by("-created_at")[:10]


# The job page's parameter list: (label, key of the stored request), in the generate form's order.
PARAMETER_LABELS = [
    ("Mode", "mode"), ("Negative prompt", "negative_prompt"), ("Size", None), ("Steps", "steps"),
    ("Sampler", "sampler"), ("Guidance scale", "guidance_scale"), ("Autoguidance scale", "autoguidance_scale"),
    ("Seed", "seed"), ("Images", "num_images"), ("CLIP guidance scale", "clip_guidance_scale"), ("Eta", "eta"),
]
MODE_LABELS = {"txt2img": "Text to image", "img2img": "Image to image", "inpaint": "Inpaint", "outpaint": "Outpaint"}
# Shown for the modes that use them: (label, key, modes).
IMAGE_PARAMETER_LABELS = [
    ("Denoising strength", "denoising_strength", ("img2img", "inpaint", "outpaint")),
    ("Resize mode", "resize_mode", ("img2img", "inpaint", "outpaint")),
    ("Mask blur", "mask_blur", ("inpaint", "outpaint")),
    ("Masked content", "inpainting_fill", ("inpaint", "outpaint")),
    ("Inpaint area", "inpaint_full_res", ("inpaint",)),
    ("Only masked padding", "inpaint_full_res_padding", ("inpaint",)),
    ("Mask inverted", "inpainting_mask_invert", ("inpaint",)),
]
HIRES_PARAMETER_LABELS = [
    ("Hires upscaler", "hr_upscaler"), ("Hires steps", "hr_second_pass_steps"),
    ("Hires denoising strength", "hr_denoising_strength"), ("Hires prompt", "hr_prompt"),
    ("Hires negative prompt", "hr_negative_prompt"), ("Hires sampler", "hr_sampler_name"),
]


def job_parameters(job) -> list[tuple[str, object]]:
    """What the job asked for, as (label, value) rows; empty and zero-valued extras left out, and
    the image-to-image and hires rows only for the jobs that use them."""
    params, rows = job.params or {}, []
    request = GenerationRequest.from_dict(params) if params.get("prompt") is not None else None
    mode = params.get("mode") or "txt2img"
    for label, key in PARAMETER_LABELS:
        if key == "mode":
            if mode != "txt2img":
                rows.append((label, MODE_LABELS.get(mode, mode)))
            continue
        if key is None:
            if params.get("width") and params.get("height"):
                size = f"{params['width']}×{params['height']}"
                if request is not None and request.output_size != (request.width, request.height):
                    size += " → {}×{}".format(*request.output_size)  # outpaint, hires fix
                rows.append((label, size))
            continue
        value = params.get(key)
        if value in (None, "") or (key in ("negative_prompt", "autoguidance_scale", "clip_guidance_scale", "eta")
                                   and not value):
            continue
        rows.append((label, value))
    for label, key, modes in IMAGE_PARAMETER_LABELS:
        if mode in modes and key in params:
            value = params[key]
            if key == "resize_mode":
                value = RESIZE_MODES.get(value, value)
            elif key == "inpainting_fill":
                value = INPAINTING_FILLS.get(value, value)
            elif key == "inpaint_full_res":
                value = "Only masked" if value else "Whole picture"
            elif key == "inpainting_mask_invert" and not value:
                continue
            rows.append((label, value))
    if mode == "outpaint":
        sides = [f"{side} {params.get(f'outpaint_{side}', 0)}" for side in ("left", "right", "top", "bottom")
                 if params.get(f"outpaint_{side}")]
        rows.append(("Outpaint", ", ".join(sides)))
    if mode == "txt2img" and params.get("enable_hr"):
        for label, key in HIRES_PARAMETER_LABELS:
            value = params.get(key)
            if value in (None, "", 0):
                continue
            rows.append((label, value))
    return rows


@login_required
def detail(request, pk):
    job = get_object_or_404(Generation.objects.visible_to(request.user).select_related("model", "source_image"),
                            pk=pk)
    if wants_json(request):
        return JsonResponse(job_snapshot(job))
    return render(request, "generation/detail.html", {"job": job, "snapshot": job_snapshot(job),
                                                      "parameters": job_parameters(job),
                                                      "images": job.images.all(),
                                                      "source": sources.describe_source(job, request.user)})


@login_required
def source(request, pk, kind):
    """A job's stored source picture (kind "init" or "mask"): its owner and staff only; a 404 for
    everyone else, so nothing tells that it exists."""
    job = Generation.objects.filter(pk=pk).first()
    if job is None or not can_manage(request.user, job):
        raise Http404("No such job.")
    stored = sources.stored_source(job, kind)
    if stored is None:
        raise Http404("This job has no such picture.")
    return sources.serve_png(stored)


@login_required
@require_POST
def cancel(request, pk):
    job = Generation.objects.filter(pk=pk).first()
    if job is None or not can_manage(request.user, job):
        raise Http404
    job = cancel_generation(job)
    if wants_json(request):
        return JsonResponse(job_snapshot(job))
    return redirect(job)


@login_required
def jobs(request):
    page = Paginator(Generation.objects.filter(owner=request.user).select_related("model"), 25).get_page(
        request.GET.get("page"))
    return render(request, "generation/jobs.html", {"page": page})


MAX_IMPORT_BYTES = sources.MAX_SOURCE_BYTES  # one limit for every image a person hands the site


@login_required
@require_POST
def import_png(request):
    """PNG-info: read the generation parameters from an ldmsite or A1111 PNG to fill the form."""
    upload = request.FILES.get("file")
    if upload is None:
        return JsonResponse({"errors": {"file": "choose a PNG file"}}, status=400)
    if upload.size > MAX_IMPORT_BYTES:
        return JsonResponse({"errors": {"file": "is larger than 20 MB"}}, status=400)
    try:
        found = read_png_metadata(upload.read())  # text chunks only: no pixel is decoded
    except PngMetadataError as error:
        return JsonResponse({"errors": {"file": str(error)}}, status=400)
    fields = found["fields"]
    if not fields:
        return JsonResponse({"errors": {"file": "has no generation parameters in it"}}, status=400)
    # The LoRA field is always sent (empty: none), so one left from before does not linger.
    fields["prompt"], loras, problems = restore_loras(request.user, fields.get("prompt", ""), fields.get("loras"),
                                                      found["extra"].get("Lora hashes", ""))
    fields["loras"] = ", ".join(f"{name}:{weight:g}" for name, weight in loras)
    return JsonResponse({"fields": fields, "lora_problems": problems})


@login_required
def workers(request):
    """Staff: live workers, the queues and models they serve, what they are running."""
    if not request.user.is_staff:
        raise Http404
    alive_after = timezone.now() - timedelta(seconds=settings.LDM_HEARTBEAT_TIMEOUT_SECONDS)
    statuses = list(WorkerStatus.objects.all())
    for status in statuses:
        status.alive = status.heartbeat_at >= alive_after
    queued = {row["model__name"]: row["n"] for row in Generation.objects.filter(status=Status.QUEUED)
              .values("model__name").annotate(n=Count("pk"))}
    return render(request, "generation/workers.html", {"statuses": statuses, "queued": queued,
                                                       "running": Generation.objects.filter(status=Status.RUNNING).count()})
