"""Pages of LoRA training: the "Train a LoRA" form, a training's live page, its sample grid, cancel.
Thin: `training_jobs` validates, stores and cancels; the page follows the training's websocket
(static/js/training.js)."""

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from gallery.models import Album
from generation.admission import Refusal
from generation.models import DiffusionModel, LoraTraining
from generation.training_jobs import (DEFAULT_BATCH_SIZE, DEFAULT_LEARNING_RATE, DEFAULT_RANK, DEFAULT_STEPS,
                                      can_manage, cancel_training, submit_training)
from generation.training_queue import MAX_ZIP_BYTES, training_snapshot

FIELDS = ("name", "trigger", "base_model", "album", "rank", "steps", "learning_rate", "batch_size", "seed")


def wants_json(request) -> bool:
    return "application/json" in request.headers.get("Accept", "")


@login_required
@require_http_methods(["GET", "POST"])
def train(request):
    values = {"rank": DEFAULT_RANK, "steps": DEFAULT_STEPS, "learning_rate": f"{DEFAULT_LEARNING_RATE:g}",
              "batch_size": DEFAULT_BATCH_SIZE, "seed": 0}
    errors: dict = {}
    if request.method == "POST":
        fields = {key: request.POST.get(key, "") for key in FIELDS}
        if request.POST.get("source") == "zip":
            fields["album"] = ""
        upload = request.FILES.get("images") if request.POST.get("source") != "album" else None
        try:
            training = submit_training(request.user, fields, upload)
        except Refusal as refusal:
            if wants_json(request):
                return JsonResponse({"errors": refusal.errors}, status=refusal.status)
            errors = refusal.errors
            values.update(fields)
        else:
            if wants_json(request):
                return JsonResponse(training_snapshot(training), status=202)
            messages.success(request, f"Training {training.name} queued.")
            return redirect(training)
    return render(request, "generation/train_lora.html", {
        "values": values, "errors": errors, "general_error": errors.get("__all__"),
        "albums": Album.objects.filter(owner=request.user).order_by("title"),
        "models": DiffusionModel.objects.filter(enabled=True).only("slug", "name"),
        "trainings": LoraTraining.objects.filter(owner=request.user).select_related("lora")[:20],
        "max_zip_mib": MAX_ZIP_BYTES // 2**20,
    }, status=400 if errors else 200)


@login_required
def training_page(request, pk):
    training = get_object_or_404(LoraTraining.objects.visible_to(request.user).select_related("lora", "base_model",
                                                                                              "album"), pk=pk)
    snapshot = training_snapshot(training)
    if wants_json(request):
        return JsonResponse(snapshot)
    return render(request, "generation/training.html", {"training": training, "snapshot": snapshot})


@login_required
def training_samples(request, pk):
    """The latest sample grid of a training (PNG): its owner and staff only, a 404 for anyone else."""
    training = LoraTraining.objects.filter(pk=pk).first()
    if training is None or not can_manage(request.user, training) or not training.samples:
        raise Http404("No such sample grid.")
    response = FileResponse(default_storage.open(training.samples[0], "rb"), content_type="image/png")
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=0"
    return response


@login_required
@require_POST
def training_cancel(request, pk):
    training = LoraTraining.objects.filter(pk=pk).first()
    if training is None or not can_manage(request.user, training):
        raise Http404
    training = cancel_training(training)
    if wants_json(request):
        return JsonResponse(training_snapshot(training))
    return redirect(training)
