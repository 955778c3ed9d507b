"""A1111's img2img (and inpainting, with a mask): its whole request body, judged field by field,
made into an ordinary job as txt2img's is (`txt2img.run_job`).

The body is A1111's StableDiffusionImg2ImgProcessingAPI. ``init_images`` (one base64 image; a
data: URL is fine) becomes the job's init image and ``mask`` (white = repaint) its mask; the job is
an inpainting job when there is a mask, img2img otherwise. The pictures go to
`services.submit_generation` as they came, which decodes and checks them (a bad one is a 422
naming ``init_images`` or ``mask``). Fields without an ldmsite feature are refused as in txt2img
(422 naming the field) unless at A1111's default; the inpainting fields count only with a mask,
as in A1111.

Omitted inpainting fields take A1111's defaults (``inpainting_fill`` 0, ``inpaint_full_res`` true,
``inpaint_full_res_padding`` 0, ``mask_blur`` 4), so a client that leaves them out gets what it
would from A1111. As A1111 does, ``parameters`` echoes ``init_images`` and ``mask`` only with
``include_init_images`` (null otherwise).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from generation.diffusion.request import INPAINTING_FILLS, RESIZE_MODES
from generation.models import DiffusionModel

from .base import A1111View
from .options import same_value
from .txt2img import (NOT_HONOURED, TXT2IMG_FIELDS, A1111Error, Flag, Integer, Real, Text, Txt2ImgResponse,
                      documented_field, echo_parameters, run_job, to_request)

# txt2img's fields that are txt2img's alone (the hires fix); the rest are both endpoints'.
TXT2IMG_ONLY = ("enable_hr", "firstphase_width", "firstphase_height", "hr_scale", "hr_upscaler",
                "hr_second_pass_steps", "hr_resize_x", "hr_resize_y", "hr_checkpoint_name", "hr_sampler_name",
                "hr_scheduler", "hr_prompt", "hr_negative_prompt")
# A1111's img2img request (StableDiffusionImg2ImgProcessingAPI, v1.10): the shared fields, then
# img2img's own (default, field type, documentation), as txt2img's TXT2IMG_FIELDS.
IMG2IMG_FIELDS: dict[str, tuple[Any, type[serializers.Field], dict]] = {
    **{name: spec for name, spec in TXT2IMG_FIELDS.items() if name not in TXT2IMG_ONLY},
    "init_images": (None, serializers.ListField, {
        "child": Text(), "help_text": "One base64 image (PNG, JPEG, WebP; a data: URL is fine)"}),
    "resize_mode": (0, Integer, {"help_text": ", ".join(f"{k}: {v}" for k, v in RESIZE_MODES.items())}),
    "denoising_strength": (0.75, Real, {"help_text": "0-1: how much of the init image is repainted"}),
    "image_cfg_scale": (None, Real, {"help_text": "No effect (instruct-pix2pix models only)"}),
    "mask": (None, Text, {"help_text": "Base64 image, the init image's size: white is repainted (inpainting)"}),
    "mask_blur_x": (4, Integer, {}), "mask_blur_y": (4, Integer, {}),
    "mask_blur": (None, Integer, {"help_text": "Pixels of blur on the mask's edge (both directions)"}),
    "mask_round": (True, Flag, {}),
    "inpainting_fill": (0, Integer, {"help_text": ", ".join(f"{k}: {v}" for k, v in INPAINTING_FILLS.items())}),
    "inpaint_full_res": (True, Flag, {"help_text": "true: repaint only the masked region, at full resolution"}),
    "inpaint_full_res_padding": (0, Integer, {"help_text": "Pixels of context around the masked region"}),
    "inpainting_mask_invert": (0, Integer, {"help_text": "1: repaint the black of the mask"}),
    "initial_noise_multiplier": (None, Real, {}), "latent_mask": (None, Text, {}),
    "include_init_images": (False, Flag, {"help_text": "true: parameters echo init_images and mask"}),
}
IMG2IMG_DEFAULTS: dict[str, Any] = {name: default for name, (default, _, _) in IMG2IMG_FIELDS.items()}

# What img2img cannot honour: txt2img's list (less the hires fix, which txt2img has), and
# A1111's noise multiplier, extra latent mask, unrounded mask.
IMG2IMG_NOT_HONOURED: dict[str, tuple] = {
    **{name: allowed for name, allowed in NOT_HONOURED.items() if name not in TXT2IMG_ONLY},
    "initial_noise_multiplier": (None, 1), "latent_mask": (None, ""), "mask_round": (None, True),
}
# No effect here, whatever the value (besides txt2img's NO_EFFECT): image_cfg_scale (A1111 uses it
# only for instruct-pix2pix models), include_init_images (the echo only), and the inpainting
# fields without a mask.
SOURCE_MAPPED = {"denoising_strength": "denoising_strength", "resize_mode": "resize_mode"}
INPAINT_MAPPED = {"inpainting_fill": "inpainting_fill", "inpaint_full_res": "inpaint_full_res",
                  "inpaint_full_res_padding": "inpaint_full_res_padding",
                  "inpainting_mask_invert": "inpainting_mask_invert"}
IMG2IMG_ERROR_FIELD = {"init_image": "init_images", "source_image": "init_images"}
MAX_INIT_IMAGES = 1


def init_image(body: dict, errors: dict[str, str]) -> Any:
    """The one init image from ``init_images``, as the client sent it (decoded by the service)."""
    images = body.get("init_images")
    if images is None or images == []:
        errors["init_images"] = "is required: a list with one base64 image (a data: URL is fine)"
        return None
    if not isinstance(images, list):
        errors["init_images"] = "must be a list with one base64 image (a data: URL is fine)"
        return None
    if len(images) > MAX_INIT_IMAGES:
        errors["init_images"] = (f"has {len(images)} images; ldmsite takes one init image per request "
                                 "(batch_size makes several results from it)")
        return None
    if not isinstance(images[0], str) or not images[0].strip():
        errors["init_images"] = "must hold a base64 image (a data: URL is fine)"
        return None
    return images[0]


def mask_blur(body: dict, errors: dict[str, str]) -> Any:
    """A1111's ``mask_blur`` sets both directions; without it, ``mask_blur_x`` and ``_y`` must agree."""
    if body.get("mask_blur") is not None:
        return body["mask_blur"]
    x, y = body.get("mask_blur_x", 4), body.get("mask_blur_y", 4)
    x, y = 4 if x is None else x, 4 if y is None else y
    if not same_value(x, (y,)):
        errors["mask_blur_y"] = ("ldmsite blurs the mask the same in both directions: give mask_blur, or "
                                 "mask_blur_x equal to mask_blur_y")
    return x


def img2img_request(body: dict, token) -> tuple[dict, DiffusionModel | None, dict[str, str]]:
    """A1111's img2img body -> (ldmsite request fields with the pictures, model, errors named by
    A1111 field)."""
    fields, model, errors = to_request(body, token, IMG2IMG_NOT_HONOURED)
    image = init_image(body, errors)
    if image is not None:
        fields["init_image"] = image
    mask = body.get("mask")
    if mask is not None and mask != "" and not isinstance(mask, str):
        errors["mask"] = "must be a base64 image (a data: URL is fine), the init image's size"
        mask = None
    fields["mode"] = "inpaint" if mask else "img2img"
    fields["denoising_strength"] = IMG2IMG_DEFAULTS["denoising_strength"]
    fields.update({ours: body[theirs] for theirs, ours in SOURCE_MAPPED.items() if body.get(theirs) is not None})
    if mask:
        fields["mask"] = mask
        fields.update({ours: IMG2IMG_DEFAULTS[theirs] if body.get(theirs) is None else body[theirs]
                       for theirs, ours in INPAINT_MAPPED.items()})
        fields["mask_blur"] = mask_blur(body, errors)
    return fields, model, errors


def img2img_parameters(body: dict) -> dict:
    """The request echoed as A1111 echoes it: the pictures only with ``include_init_images``."""
    parameters = echo_parameters(body, IMG2IMG_DEFAULTS)
    if body.get("include_init_images") is not True:
        parameters["init_images"] = None
        parameters["mask"] = None
    return parameters


Img2ImgRequestSerializer = type("Img2ImgRequestSerializer", (serializers.Serializer,), {
    "__doc__": "A1111's StableDiffusionImg2ImgProcessingAPI (documentation; `img2img_request` judges it).",
    **{name: documented_field(*spec) for name, spec in IMG2IMG_FIELDS.items()},
})


@extend_schema(tags=["a1111"], summary="A1111 img2img and inpainting: generate from an image and wait",
               request=Img2ImgRequestSerializer,
               responses={200: Txt2ImgResponse,
                          202: OpenApiResponse(Txt2ImgResponse, description="Still running after "
                                               "LDM_A1111_TIMEOUT_SECONDS: the job goes on; see `job` and Location"),
                          500: OpenApiResponse(A1111Error, description="The job failed")},
               description="A1111's request body, whole: `init_images` (one base64 image) and, to inpaint, `mask` "
                           "(white = repaint, the init image's size). The init image is fitted to width x height by "
                           "`resize_mode`. Fields ldmsite cannot honour are accepted at A1111's default and answer "
                           "422 naming the field otherwise; a bad image is a 422 naming `init_images` or `mask`. "
                           "Needs the generate scope.")
class Img2Img(A1111View):
    required_scopes = {"POST": "generate"}
    throttle_generation = True

    def post(self, request):
        body = request.data
        if not isinstance(body, dict):
            raise ValidationError({"__all__": "The body must be a JSON object (A1111's img2img request)."})
        fields, model, errors = img2img_request(body, request.auth)
        return run_job(request, body, fields, model, errors, parameters=img2img_parameters(body),
                       error_field=IMG2IMG_ERROR_FIELD)
