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

from gallery.models import Image
from generation.admission import Refusal
from generation.diffusion import read_png_parameters
from generation.diffusion.pngmeta import PngMetadataError
from generation.diffusion.request import GenerationRequest
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


def remix_params(request) -> dict | None:
    """The fields of the image ``?remix=<id>`` names, if the person may see it (a `Refusal` naming
    ``remix`` when it is not an id)."""
    image_id = form_id(request.GET.get("remix"), "remix")
    if image_id is None:
        return None
    image = Image.objects.filter(pk=image_id).first()
    if image is None or not image.can_view(request.user):
        return None
    # Through the request class: a field a job was stored without (e.g. autoguidance_scale, added
    # later) gets the value it ran with -- the field's default, not today's model default.
    params = GenerationRequest.from_dict(image.generation.params).to_dict() if image.generation else {}
    params.update(prompt=image.prompt, negative_prompt=image.negative_prompt, seed=image.seed, num_images=1)
    if image.model:
        params["model"] = image.model.slug
    return params


@login_required
@require_http_methods(["GET", "POST"])
def generate(request):
    models = list(DiffusionModel.objects.filter(enabled=True))
    if request.method == "POST":
        form = GenerateForm(request.POST)
        try:
            job = submit_generation(request.user, {**form.request_fields(), "model": request.POST.get("model", "")})
        except Refusal as error:
            if wants_json(request):
                return JsonResponse({"errors": error.errors}, status=error.status)
            add_errors(form, error.errors)
            return render(request, "generation/generate.html", {"form": form, "models": models,
                                                                "recent": recent_jobs(request.user)}, status=error.status)
        if wants_json(request):
            return JsonResponse({"job": job_snapshot(job)}, status=202)
        return redirect(job)
    try:
        remix = remix_params(request)
    except Refusal as error:
        for message in error.messages():
            messages.error(request, message)
        remix = None
    default = DiffusionModel.default()
    if remix and remix.get("model"):
        default = DiffusionModel.objects.filter(enabled=True, slug=remix["model"]).first() or default
    form = GenerateForm(initial=GenerateForm.initial_for(default, remix))
    return render(request, "generation/generate.html", {"form": form, "models": models,
                                                        "recent": recent_jobs(request.user)})


def recent_jobs(user):
    """The person's latest jobs, for the page's list before (or without) its script."""
    return Generation.objects.filter(owner=user).select_related("model").order_by("-created_at")[:10]


# The job page's parameter list: (label, key of the stored request), in the generate form's order.
PARAMETER_LABELS = [
    ("Negative prompt", "negative_prompt"), ("Size", None), ("Steps", "steps"), ("Sampler", "sampler"),
    ("Guidance scale", "guidance_scale"), ("Autoguidance scale", "autoguidance_scale"), ("Seed", "seed"),
    ("Images", "num_images"), ("CLIP guidance scale", "clip_guidance_scale"), ("Eta", "eta"),
]


def job_parameters(job) -> list[tuple[str, object]]:
    """What the job asked for, as (label, value) rows; empty and zero-valued extras left out."""
    params, rows = job.params or {}, []
    for label, key in PARAMETER_LABELS:
        if key is None:
            if params.get("width") and params.get("height"):
                rows.append((label, f"{params['width']}×{params['height']}"))
            continue
        value = params.get(key)
        if value in (None, "") or (key in ("negative_prompt", "autoguidance_scale", "clip_guidance_scale", "eta")
                                   and not value):
            continue
        rows.append((label, value))
    return rows


@login_required
def detail(request, pk):
    job = get_object_or_404(Generation.objects.visible_to(request.user).select_related("model"), pk=pk)
    if wants_json(request):
        return JsonResponse(job_snapshot(job))
    return render(request, "generation/detail.html", {"job": job, "snapshot": job_snapshot(job),
                                                      "parameters": job_parameters(job),
                                                      "images": job.images.all()})


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


MAX_IMPORT_BYTES = 20 * 1024 * 1024


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
        fields = read_png_parameters(upload.read())  # text chunks only: no pixel is decoded
    except PngMetadataError as error:
        return JsonResponse({"errors": {"file": str(error)}}, status=400)
    if not fields:
        return JsonResponse({"errors": {"file": "has no generation parameters in it"}}, status=400)
    return JsonResponse({"fields": fields})


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
