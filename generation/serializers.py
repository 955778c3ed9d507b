"""REST API shapes of models and jobs.

Validation of a generation request is `generation.diffusion.validate_request` (through
`services.submit_generation`), the same function the page and the CLI use; the request
serializer here only describes the body for the OpenAPI schema.
"""

from __future__ import annotations

from collections.abc import Mapping

from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from generation.diffusion import MAX_PROMPT_CHARS, MAX_SEED, SAMPLERS
from generation.diffusion.request import (MAX_AUTOGUIDANCE_SCALE, MAX_CLIP_CUTOUTS, MAX_CLIP_GUIDANCE_EVERY,
                                          MAX_CLIP_GUIDANCE_SCALE, MAX_GUIDANCE_SCALE, ModelLimits)
from generation.models import DiffusionModel, Generation
from generation.queue import queue_position


class StrictSerializer(serializers.Serializer):
    """Refuses fields it does not know (a typo must not be silently ignored) and read-only ones."""

    def to_internal_value(self, data):
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = [str(name) for name in data if name not in writable]
            if unknown:
                raise serializers.ValidationError(
                    {name: f"unknown field; allowed fields are: {', '.join(sorted(writable))}" for name in unknown})
        return super().to_internal_value(data)


# --- Models ---------------------------------------------------------------------------------

class ModelLimitsSerializer(serializers.Serializer):
    max_width = serializers.IntegerField()
    max_height = serializers.IntegerField()
    min_width = serializers.IntegerField()
    min_height = serializers.IntegerField()
    max_steps = serializers.IntegerField()
    max_num_images = serializers.IntegerField()
    default_width = serializers.IntegerField()
    default_height = serializers.IntegerField()
    default_steps = serializers.IntegerField()
    default_sampler = serializers.CharField()
    default_guidance_scale = serializers.FloatField()
    default_autoguidance_scale = serializers.FloatField()
    size_multiple = serializers.IntegerField()
    has_clip = serializers.BooleanField()
    has_guide_unet = serializers.BooleanField()


class DiffusionModelSerializer(serializers.ModelSerializer):
    limits = serializers.SerializerMethodField()
    samplers = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()

    class Meta:
        model = DiffusionModel
        fields = ["slug", "name", "family", "description", "is_default", "has_clip", "has_guide_unet", "revision",
                  "limits", "samplers", "url"]

    @extend_schema_field(ModelLimitsSerializer)
    def get_limits(self, model) -> dict:
        return model.limits().to_dict()

    def get_samplers(self, model) -> list[str]:
        return list(SAMPLERS)

    def get_url(self, model) -> str:
        return reverse("api:model-detail", args=[model.slug])


# --- Jobs ---------------------------------------------------------------------------------------

_DEFAULTS = ModelLimits()


class GenerationRequestSerializer(StrictSerializer):
    """The body of POST /api/v1/generations/ (documentation; `validate_request` judges it).

    Sizes and step counts are bounded by the model: see its `limits`.
    """

    model = serializers.CharField(required=False, allow_blank=True, max_length=100,
                                  help_text="Model slug; empty or absent: the default model")
    prompt = serializers.CharField(max_length=MAX_PROMPT_CHARS)
    negative_prompt = serializers.CharField(required=False, allow_blank=True, max_length=MAX_PROMPT_CHARS)
    width = serializers.IntegerField(required=False, min_value=8, max_value=_DEFAULTS.max_width,
                                     help_text="A multiple of 8 within the model's limits")
    height = serializers.IntegerField(required=False, min_value=8, max_value=_DEFAULTS.max_height,
                                      help_text="A multiple of 8 within the model's limits")
    steps = serializers.IntegerField(required=False, min_value=1, max_value=_DEFAULTS.max_steps)
    guidance_scale = serializers.FloatField(required=False, min_value=0, max_value=MAX_GUIDANCE_SCALE)
    autoguidance_scale = serializers.FloatField(
        required=False, min_value=0, max_value=MAX_AUTOGUIDANCE_SCALE,
        help_text="0: off; needs a model with a guide UNet (has_guide_unet); absent: the model's default")
    sampler = serializers.ChoiceField(required=False, choices=list(SAMPLERS),
                                      help_text="A1111 sampler name; A1111/k-diffusion aliases are accepted too")
    seed = serializers.IntegerField(required=False, allow_null=True, min_value=-1, max_value=MAX_SEED,
                                    help_text="-1, null or absent: random (the seed used is recorded)")
    num_images = serializers.IntegerField(required=False, min_value=1, max_value=_DEFAULTS.max_num_images,
                                          help_text="Image k uses seed + k")
    eta = serializers.FloatField(required=False, min_value=0, max_value=1, help_text="DDIM's eta")
    clip_guidance_scale = serializers.FloatField(required=False, min_value=0, max_value=MAX_CLIP_GUIDANCE_SCALE,
                                                 help_text="0: off; needs a model with CLIP")
    clip_cutouts = serializers.IntegerField(required=False, min_value=1, max_value=MAX_CLIP_CUTOUTS)
    clip_guidance_every = serializers.IntegerField(required=False, min_value=1, max_value=MAX_CLIP_GUIDANCE_EVERY)
    clip_guidance_start = serializers.FloatField(required=False, min_value=0, max_value=1)
    clip_guidance_end = serializers.FloatField(required=False, min_value=0, max_value=1)


class ImageSummarySerializer(serializers.Serializer):
    id = serializers.IntegerField()
    url = serializers.CharField(help_text="The image in the API")
    file = serializers.CharField(help_text="Download the original PNG (parameters embedded)")
    thumbnail = serializers.CharField()
    seed = serializers.IntegerField()
    width = serializers.IntegerField()
    height = serializers.IntegerField()
    clip_score = serializers.FloatField(allow_null=True)


def image_summary(image) -> dict:
    return {"id": image.pk, "url": reverse("api:image-detail", args=[image.pk]),
            "file": reverse("api:image-file", args=[image.pk]), "thumbnail": image.thumbnail_url(),
            "seed": image.seed, "width": image.width, "height": image.height, "clip_score": image.clip_score}


def websocket_url(request, job_id: int | None = None) -> str:
    scheme = "wss" if request.is_secure() else "ws"
    path = f"/ws/generations/{job_id}/" if job_id is not None else "/ws/generations/"
    return f"{scheme}://{request.get_host()}{path}"


class GenerationSerializer(serializers.ModelSerializer):
    id = serializers.IntegerField(read_only=True)
    model = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    position = serializers.SerializerMethodField(help_text="1-based place in the queue while queued")
    eta = serializers.SerializerMethodField(help_text="Estimated seconds until it starts, while queued")
    params = serializers.JSONField(read_only=True, help_text="The validated request, seed included")
    error = serializers.CharField(source="error_message", read_only=True)
    images = serializers.SerializerMethodField()
    url = serializers.SerializerMethodField()
    cancel_url = serializers.SerializerMethodField()
    page_url = serializers.SerializerMethodField()
    websocket_url = serializers.SerializerMethodField()

    class Meta:
        model = Generation
        fields = ["id", "status", "step", "total_steps", "position", "eta", "model", "params", "error",
                  "created_at", "started_at", "finished_at", "images", "url", "cancel_url", "page_url",
                  "websocket_url"]
        read_only_fields = fields

    def _queue(self, job):
        if not hasattr(job, "_queue_cache"):
            job._queue_cache = queue_position(job)
        return job._queue_cache

    def get_position(self, job) -> int | None:
        return self._queue(job)[0]

    def get_eta(self, job) -> float | None:
        return self._queue(job)[1]

    @extend_schema_field(ImageSummarySerializer(many=True))
    def get_images(self, job) -> list:
        # A succeeded job's images, or what a cancelled one had made when it was interrupted.
        return [image_summary(image) for image in sorted(job.images.all(), key=lambda image: image.index)]

    def get_url(self, job) -> str:
        return reverse("api:generation-detail", args=[job.pk])

    def get_cancel_url(self, job) -> str:
        return reverse("api:generation-cancel", args=[job.pk])

    def get_page_url(self, job) -> str:
        return job.get_absolute_url()

    @extend_schema_field(OpenApiTypes.STR)
    def get_websocket_url(self, job) -> str:
        request = self.context.get("request")
        return websocket_url(request, job.pk) if request is not None else f"/ws/generations/{job.pk}/"
