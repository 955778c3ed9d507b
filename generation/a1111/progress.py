"""A1111's progress, interrupt and skip, and the web UI's /internal/progress: about your own jobs.

``current_image`` is the running job's latest live preview (``Generation.preview``, which the
runner keeps fresh), as A1111 sends it: a base64 PNG.
"""

from __future__ import annotations

import base64
import binascii
import io
import time

from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from generation.models import Generation
from generation.queue import average_job_seconds, queue_position
from generation.services import cancel_generation

from .base import A1111View, null_response
from .txt2img import job_of_task

Status = Generation.Status


def current_job(user) -> Generation | None:
    """The person's job A1111 would call current: the running one, else the next queued."""
    active = Generation.objects.filter(owner=user).active().select_related("model")
    return (active.filter(status=Status.RUNNING).order_by("started_at", "id").first()
            or active.filter(status=Status.QUEUED).order_by("created_at", "id").first())


def preview_png(job: Generation | None) -> str | None:
    """A running job's latest preview (a data: URL, WebP) as A1111's ``current_image``: base64 PNG."""
    if job is None or job.status != Status.RUNNING or not job.preview or "," not in job.preview:
        return None
    try:
        picture = PILImage.open(io.BytesIO(base64.b64decode(job.preview.split(",", 1)[1])))
        buffer = io.BytesIO()
        picture.convert("RGB").save(buffer, format="PNG")
    except (binascii.Error, ValueError, OSError, UnidentifiedImageError):
        return None
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def job_progress(job: Generation) -> tuple[float, float]:
    """(0..1, seconds left): the running job's step, or the queue's estimate for a queued one."""
    if job.status == Status.RUNNING and job.total_steps:
        progress = min(1.0, job.step / job.total_steps)
        elapsed = max(0.0, time.time() - job.started_at.timestamp()) if job.started_at else 0.0
        eta = elapsed / progress - elapsed if progress > 0 else average_job_seconds(job.model_id)
        return progress, max(0.0, eta)
    if job.status == Status.QUEUED:
        _, wait = queue_position(job)
        return 0.0, max(0.0, (wait or 0.0) + average_job_seconds(job.model_id))
    return (1.0 if job.is_final else 0.0), 0.0


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
    "current_image": serializers.CharField(allow_null=True, help_text="The running job's latest preview, base64 "
                                                                      "PNG (null when there is none)"),
    "textinfo": serializers.CharField(allow_null=True),
    "current_task": serializers.CharField(allow_null=True),
})


@extend_schema(tags=["a1111"], summary="A1111 progress of your current job",
               parameters=[OpenApiParameter("skip_current_image", bool, description="true: no current_image")],
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
            progress, eta = job_progress(job)
        skip_image = request.query_params.get("skip_current_image", "").strip().lower() in ("true", "1", "yes")
        return Response({
            "progress": round(progress, 4), "eta_relative": round(eta, 2),
            "state": {"skipped": False, "interrupted": bool(job and job.cancel_requested),
                      "stopping_generation": False, "job": name, "job_count": job_count,
                      "job_timestamp": timestamp, "job_no": 0, "sampling_step": step, "sampling_steps": total},
            "current_image": None if skip_image else preview_png(job), "textinfo": None,
            "current_task": f"ldmsite-{job.pk}" if job is not None else None,
        })


@extend_schema(tags=["a1111"], summary="A1111 interrupt: stop your current job", request=None,
               responses={200: inline_serializer("Empty", {})},
               description="Cancels your running job (or, when none runs, your next queued one); txt2img then "
                           "answers with the images it kept. Needs the generate scope.")
class Interrupt(A1111View):
    required_scopes = {"POST": "generate"}

    def post(self, request):
        running = list(Generation.objects.filter(owner=request.user, status=Status.RUNNING))
        jobs = running or [job for job in [current_job(request.user)] if job is not None]
        for job in jobs:
            cancel_generation(job)
        return Response({})


@extend_schema(tags=["a1111"], summary="A1111 skip: accepted, no effect", request=None,
               responses={200: {"type": "object", "nullable": True}},
               description="A1111 skips the current batch of an n_iter run; ldmsite makes a job's images in one "
                           "pass, so there is nothing to skip (use interrupt). Answers null. Needs the generate "
                           "scope.")
class Skip(A1111View):
    required_scopes = {"POST": "generate"}

    def post(self, request):
        return null_response()


InternalProgressRequest = inline_serializer("InternalProgressRequest", {
    "id_task": serializers.CharField(required=False, allow_null=True,
                                     help_text="txt2img's force_task_id, or progress's current_task; absent: "
                                               "your current job"),
    "id_live_preview": serializers.IntegerField(required=False, default=-1),
    "live_preview": serializers.BooleanField(required=False, default=True),
})
InternalProgressResponse = inline_serializer("InternalProgressResponse", {
    "active": serializers.BooleanField(), "queued": serializers.BooleanField(),
    "completed": serializers.BooleanField(),
    "progress": serializers.FloatField(allow_null=True), "eta": serializers.FloatField(allow_null=True),
    "live_preview": serializers.CharField(allow_null=True, help_text="A data: URL"),
    "id_live_preview": serializers.IntegerField(allow_null=True), "textinfo": serializers.CharField(allow_null=True),
})


@extend_schema(tags=["a1111"], summary="The A1111 web UI's task progress (/internal/progress)",
               request=InternalProgressRequest, responses={200: InternalProgressResponse})
class InternalProgress(A1111View):
    required_scopes = {"POST": "read"}

    def post(self, request):
        body = request.data
        if not isinstance(body, dict):
            raise ValidationError({"__all__": "The body must be a JSON object: {\"id_task\": ...}."})
        task = body.get("id_task")
        job = job_of_task(request.user, task) if task else current_job(request.user)
        answer = {"active": False, "queued": False, "completed": False, "progress": None, "eta": None,
                  "live_preview": None, "id_live_preview": -1, "textinfo": "Waiting..."}
        if job is None:
            return Response(answer)
        answer.update(active=job.status == Status.RUNNING, queued=job.status == Status.QUEUED,
                      completed=job.is_final)
        if job.status == Status.QUEUED:
            position, _ = queue_position(job)
            answer["textinfo"] = f"In queue: {position}" if position else "In queue"
            return Response(answer)
        progress, eta = job_progress(job)
        answer.update(progress=round(progress, 4), eta=round(eta, 2), textinfo=None if job.is_final else
                      f"Step {job.step}/{job.total_steps}")
        if job.status == Status.RUNNING and body.get("live_preview", True) is not False and job.preview \
                and body.get("id_live_preview") != job.step:
            answer.update(live_preview=job.preview, id_live_preview=job.step)
        return Response(answer)
