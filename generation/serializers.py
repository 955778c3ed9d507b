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
from generation.diffusion.request import (HR_UPSCALERS, INPAINTING_FILLS, MAX_AUTOGUIDANCE_SCALE, MAX_CLIP_CUTOUTS,
                                          MAX_CLIP_GUIDANCE_EVERY, MAX_CLIP_GUIDANCE_SCALE, MAX_GUIDANCE_SCALE,
                                          MAX_HR_SCALE, MAX_INPAINT_PADDING, MAX_MASK_BLUR, MODES, RESIZE_MODES,
                                          ModelLimits)
from generation.models import DiffusionModel, Generation
from generation.queue import queue_position
from generation.sources import FORMATS_TEXT, MAX_SOURCE_BYTES, MAX_SOURCE_PIXELS, describe_source


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
INIT_IMAGE_HELP = (f"The picture to start from: base64 or a data: URL ({FORMATS_TEXT}, at most "
                   f"{MAX_SOURCE_BYTES // (1024 * 1024)} MB and {MAX_SOURCE_PIXELS:,} pixels); in a multipart body, "
                   "a file part")


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
    # Image to image (A1111's img2img fields; the picture itself: init_image / source_image below).
    mode = serializers.ChoiceField(
        required=False, choices=list(MODES),
        help_text="Absent: inferred -- a mask: inpaint; an init_image, source_image or source_job: img2img; "
                  "else txt2img. img2img, inpaint and outpaint need a source picture.")
    denoising_strength = serializers.FloatField(
        required=False, min_value=0, max_value=1,
        help_text="img2img/inpaint/outpaint: how much of the source is repainted (steps x strength steps run)")
    resize_mode = serializers.IntegerField(
        required=False, min_value=0, max_value=max(RESIZE_MODES),
        help_text="How a source of another size is fitted to width x height: "
                  + ", ".join(f"{number}: {name.lower()}" for number, name in RESIZE_MODES.items()))
    mask_blur = serializers.IntegerField(required=False, min_value=0, max_value=MAX_MASK_BLUR,
                                         help_text="Pixels of blur on the mask's edge")
    inpainting_fill = serializers.IntegerField(
        required=False, min_value=0, max_value=max(INPAINTING_FILLS),
        help_text="What the masked area starts from: "
                  + ", ".join(f"{number}: {name}" for number, name in INPAINTING_FILLS.items()))
    inpaint_full_res = serializers.BooleanField(
        required=False, help_text="Repaint only the masked region, at full resolution, then paste it back")
    inpaint_full_res_padding = serializers.IntegerField(required=False, min_value=0, max_value=MAX_INPAINT_PADDING,
                                                        help_text="Pixels of context around that region")
    inpainting_mask_invert = serializers.BooleanField(required=False,
                                                      help_text="Repaint the black of the mask instead of the white")
    outpaint_left = serializers.IntegerField(required=False, min_value=0, max_value=_DEFAULTS.max_width,
                                             help_text="outpaint: pixels added on the left (a multiple of 8)")
    outpaint_right = serializers.IntegerField(required=False, min_value=0, max_value=_DEFAULTS.max_width)
    outpaint_top = serializers.IntegerField(required=False, min_value=0, max_value=_DEFAULTS.max_height)
    outpaint_bottom = serializers.IntegerField(required=False, min_value=0, max_value=_DEFAULTS.max_height)
    # Hires fix (txt2img only).
    enable_hr = serializers.BooleanField(required=False, help_text="txt2img: a second pass at a larger size")
    hr_scale = serializers.FloatField(required=False, min_value=1, max_value=MAX_HR_SCALE)
    hr_resize_x = serializers.IntegerField(required=False, min_value=0, max_value=_DEFAULTS.max_width,
                                           help_text="0: width x hr_scale")
    hr_resize_y = serializers.IntegerField(required=False, min_value=0, max_value=_DEFAULTS.max_height,
                                           help_text="0: height x hr_scale")
    hr_upscaler = serializers.ChoiceField(required=False, choices=list(HR_UPSCALERS))
    hr_second_pass_steps = serializers.IntegerField(required=False, min_value=0, max_value=_DEFAULTS.max_steps,
                                                    help_text="0: the same as steps")
    hr_denoising_strength = serializers.FloatField(required=False, min_value=0, max_value=1)
    hr_prompt = serializers.CharField(required=False, allow_blank=True, max_length=MAX_PROMPT_CHARS,
                                      help_text="Empty: the prompt")
    hr_negative_prompt = serializers.CharField(required=False, allow_blank=True, max_length=MAX_PROMPT_CHARS,
                                               help_text="Empty: the negative prompt")
    hr_sampler_name = serializers.CharField(required=False, allow_blank=True,
                                            help_text="Empty: the sampler; else a sampler name")
    # The source picture (one of init_image, source_image, source_job) and the mask.
    init_image = serializers.CharField(required=False, help_text=INIT_IMAGE_HELP)
    mask = serializers.CharField(
        required=False,
        help_text="inpaint: white = repaint (or the opaque part of a transparent PNG); the init image's size; "
                  "as init_image")
    source_image = serializers.IntegerField(required=False, min_value=1,
                                            help_text="Instead of init_image: the id of an image you can see")
    source_job = serializers.IntegerField(
        required=False, min_value=1,
        help_text="Instead of init_image: the id of one of your jobs whose source picture (and mask) to reuse")


class GenerationUploadSerializer(GenerationRequestSerializer):
    """The same body as multipart/form-data: the pictures as file parts."""

    init_image = serializers.FileField(required=False, help_text=INIT_IMAGE_HELP)
    mask = serializers.FileField(required=False, help_text="inpaint: white = repaint; the init image's size")


class SourcePictureSerializer(serializers.Serializer):
    image = serializers.IntegerField(allow_null=True, help_text="The gallery image it came from (if you can see it)")
    image_url = serializers.CharField(allow_null=True, help_text="That image in the API")
    init_image = serializers.CharField(help_text="Download the stored source picture (PNG)")
    mask = serializers.CharField(allow_null=True, help_text="Download the stored mask (PNG); null without one")


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
    mode = serializers.SerializerMethodField(help_text="txt2img, img2img, inpaint or outpaint")
    source = serializers.SerializerMethodField(help_text="The source picture of an image-to-image job; null for "
                                                         "text to image")

    class Meta:
        model = Generation
        fields = ["id", "status", "step", "total_steps", "position", "eta", "model", "mode", "params", "error",
                  "created_at", "started_at", "finished_at", "images", "source", "url", "cancel_url", "page_url",
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

    @extend_schema_field(serializers.ChoiceField(choices=list(MODES)))
    def get_mode(self, job) -> str:
        return job.mode

    @extend_schema_field(SourcePictureSerializer(allow_null=True))
    def get_source(self, job) -> dict | None:
        # Jobs are listed and shown to their owner and staff only, who may see their source.
        request = self.context.get("request")
        viewer = getattr(request, "user", None)
        info = describe_source(job, viewer) if viewer is not None else None
        if info is None or info["init_url"] is None:
            return None
        image = info["image"]
        return {"image": image.pk if image is not None else None,
                "image_url": reverse("api:image-detail", args=[image.pk]) if image is not None else None,
                "init_image": reverse("api:generation-source", args=[job.pk, "init"]),
                "mask": reverse("api:generation-source", args=[job.pk, "mask"]) if job.mask else None}

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
