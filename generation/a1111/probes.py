"""What A1111 clients ask a server about before they generate, in A1111's shapes, with what ldmsite
has: its models, the person's LoRAs, samplers, schedule types and the hires fix's upscalers, and empty lists of what
it has none of (embeddings, styles, VAEs, scripts). Also png-info (a PNG's parameters), memory, cmd-flags,
the refresh calls (nothing to refresh: models come from the registry) and /internal/ping.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
import sys

from drf_spectacular.utils import extend_schema, inline_serializer
from PIL import Image as PILImage
from PIL import UnidentifiedImageError
from rest_framework import serializers
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from gallery.models import Lora
from generation.admission import Refusal
from generation.diffusion import SAMPLERS, parse_parameters
from generation.diffusion.request import IMAGE_UPSCALERS, LATENT_UPSCALERS
from generation.models import DiffusionModel

from .base import A1111View, null_response
from .names import SCHEDULERS, sd_model_item

MAX_PNG_PIXELS = 4096 * 4096  # png-info reads text chunks; it refuses to decode anything bigger
MAX_INFOTEXT_LINE = 4000  # the key/value line of an infotext is parsed only up to this length
Text = serializers.CharField


def listing(summary: str, item: dict, *, many: bool = True, description: str = ""):
    """`extend_schema` for a GET that answers A1111's list (or object) of `item`."""
    name = "A1111" + "".join(word.capitalize() for word in summary.split()[0].strip(":").split("-"))
    return extend_schema(tags=["a1111"], summary=f"A1111 {summary}", description=description,
                         responses={200: inline_serializer(name, item, many=many)})


def empty_list_view(name: str, summary: str, item: dict, description: str) -> type[A1111View]:
    """A view of A1111's list of things ldmsite has none of: always []."""

    def get(self, request):
        return Response([])

    return type(name, (A1111View,), {"__doc__": f"A1111 {summary}: ldmsite has none.", "__module__": __name__,
                                     "get": listing(summary, item, description=description)(get)})


# The hires fix's image upscalers (resamplers, no model files), as A1111 lists its built-in ones
# (its UpscalerData's default scale, 4); the latent ones are latent-upscale-modes.
UPSCALERS = [{"name": name, "model_name": None, "model_path": None, "model_url": None, "scale": 4}
             for name in IMAGE_UPSCALERS]
LATENT_UPSCALE_MODES = [{"name": name} for name in LATENT_UPSCALERS]


class Upscalers(A1111View):
    @listing("upscalers", {
        "name": Text(), "model_name": Text(allow_null=True), "model_path": Text(allow_null=True),
        "model_url": Text(allow_null=True), "scale": serializers.FloatField(allow_null=True)},
        description="The hires fix's image upscalers (`hr_upscaler`): resamplers, no model files. "
                    "The latent ones are latent-upscale-modes.")
    def get(self, request):
        return Response(UPSCALERS)


class LatentUpscaleModes(A1111View):
    @listing("latent-upscale-modes", {"name": Text()},
             description="The hires fix's latent upscalers (`hr_upscaler`), interpolating the first pass's latents.")
    def get(self, request):
        return Response(LATENT_UPSCALE_MODES)

def lora_items(user) -> list[dict]:
    """A1111's LoRA list for ``user``: the LoRAs they may use, each once, by the name a prompt gives
    it (``<lora:name:w>``: their own by name, others' shared ones by ``username/name``)."""
    items = {lora.pk: lora for lora in Lora.objects.usable_by(user).values()}
    listed = sorted(items.values(), key=lambda lora: lora.request_name(user).lower())
    return [{"name": lora.request_name(user), "alias": lora.request_name(user),
             "path": f"{lora.qualified_name}.safetensors",
             "metadata": {"ss_base_model": lora.base_model.slug, "ldmsite_hash": lora.short_hash,
                          **({"ss_trigger_words": lora.trigger_words} if lora.trigger_words else {})}}
            for lora in listed]


class Loras(A1111View):
    @listing("loras", {"name": Text(), "alias": Text(), "path": Text(), "metadata": serializers.DictField()},
             description="The LoRAs the token's person may use, by the name `<lora:name:weight>` gives them: "
                         "their own by name, anyone's public or unlisted one by `username/name`.")
    def get(self, request):
        return Response(lora_items(request.user))


PromptStyles = empty_list_view("PromptStyles", "prompt-styles", {
    "name": Text(), "prompt": Text(allow_null=True), "negative_prompt": Text(allow_null=True)},
    "ldmsite has no saved styles: an empty list.")
SdVae = empty_list_view("SdVae", "sd-vae", {"model_name": Text(), "filename": Text()},
                        "Each model uses its own VAE (option sd_vae: Automatic): an empty list.")
Hypernetworks = empty_list_view("Hypernetworks", "hypernetworks", {"name": Text(), "path": Text(allow_null=True)},
                                "An empty list.")
FaceRestorers = empty_list_view("FaceRestorers", "face-restorers", {"name": Text(), "cmd_dir": Text(allow_null=True)},
                                "An empty list.")
RealesrganModels = empty_list_view("RealesrganModels", "realesrgan-models", {
    "name": Text(), "path": Text(allow_null=True), "scale": serializers.IntegerField(allow_null=True)},
    "An empty list.")
ScriptInfo = empty_list_view("ScriptInfo", "script-info", {
    "name": Text(), "is_alwayson": serializers.BooleanField(), "is_img2img": serializers.BooleanField(),
    "args": serializers.ListField(child=serializers.DictField())}, "ldmsite runs no scripts: an empty list.")
Extensions = empty_list_view("Extensions", "extensions", {
    "name": Text(), "remote": Text(), "branch": Text(), "commit_hash": Text(), "version": Text(),
    "commit_date": Text(), "enabled": serializers.BooleanField()}, "ldmsite has no extensions: an empty list.")


class SdModels(A1111View):
    @listing("sd-models: the installed models", {
        "title": Text(), "model_name": Text(), "hash": Text(allow_null=True), "sha256": Text(allow_null=True),
        "filename": Text(), "config": Text(allow_null=True)},
        description="`hash`/`sha256`: the model's content hash (docs/API.md), as in its PNGs' Model hash.")
    def get(self, request):
        return Response([sd_model_item(model) for model in DiffusionModel.objects.filter(enabled=True)])


class Samplers(A1111View):
    @listing("samplers", {"name": Text(), "aliases": serializers.ListField(child=Text()),
                          "options": serializers.DictField(child=Text())})
    def get(self, request):
        return Response([{"name": spec.name, "aliases": list(spec.aliases),
                          "options": {"scheduler": "karras"} if spec.overrides.get("use_karras_sigmas") else {}}
                         for spec in SAMPLERS.values()])


class Schedulers(A1111View):
    @listing("schedulers (schedule types)", {
        "name": Text(), "label": Text(), "aliases": serializers.ListField(child=Text(), allow_null=True),
        "default_rho": serializers.FloatField(), "need_inner_model": serializers.BooleanField()},
        description="automatic and normal: the sampler's own spacing; karras: its Karras variant.")
    def get(self, request):
        return Response(SCHEDULERS)


class Scripts(A1111View):
    @listing("scripts", {"txt2img": serializers.ListField(child=Text()),
                         "img2img": serializers.ListField(child=Text())}, many=False,
             description="ldmsite runs no scripts: two empty lists.")
    def get(self, request):
        return Response({"txt2img": [], "img2img": []})


class Embeddings(A1111View):
    @listing("embeddings", {"loaded": serializers.DictField(), "skipped": serializers.DictField()}, many=False,
             description="ldmsite has no textual-inversion embeddings: both empty.")
    def get(self, request):
        return Response({"loaded": {}, "skipped": {}})


def memory_stats() -> dict:
    """A1111's shape: this web process's RAM (used = its resident size) and, where this process has
    torch with CUDA loaded (an embedded worker), the device's memory."""
    try:
        with open("/proc/self/statm") as statm:
            used = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        ram = {"free": total - used, "used": used, "total": total}
    except (OSError, ValueError, IndexError) as error:
        ram = {"error": str(error)}
    torch = sys.modules.get("torch")  # never imported here just to answer
    cuda = {"error": "unavailable"}
    try:
        if torch is not None and torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            cuda = {"system": {"free": free, "used": total - free, "total": total}}
    except Exception as error:  # noqa: BLE001 — a probe never fails for want of a device
        cuda = {"error": str(error)}
    return {"ram": ram, "cuda": cuda}


class Memory(A1111View):
    @listing("memory", {"ram": serializers.DictField(), "cuda": serializers.DictField()}, many=False,
             description="The web process's RAM; the GPU's memory only where this process runs a worker.")
    def get(self, request):
        return Response(memory_stats())


# A1111's command-line flags (`vars(cmd_opts)`) as ldmsite would have them: the API on, no UI
# flags, nothing secret.
CMD_FLAGS = {
    "api": True, "api_auth": None, "api_log": False, "nowebui": False, "listen": False, "port": None,
    "ckpt": None, "ckpt_dir": None, "vae_dir": None, "lora_dir": None, "embeddings_dir": None,
    "hypernetwork_dir": None, "medvram": False, "lowvram": False, "no_half": False, "xformers": False,
    "disable_safe_unpickle": False, "freeze_settings": True, "hide_ui_dir_config": True, "skip_version_check": True,
}


class CmdFlags(A1111View):
    @listing("cmd-flags", {"api": serializers.BooleanField()}, many=False,
             description="A few of A1111's flags, as ldmsite has them (options cannot be changed server-wide).")
    def get(self, request):
        return Response(CMD_FLAGS)


@extend_schema(tags=["a1111"], summary="A1111 refresh (checkpoints, VAEs, LoRAs, embeddings): nothing to do",
               request=None, responses={200: {"type": "object", "nullable": True}},
               description="Models come from ldmsite's registry and show at once; answers null.")
class Refresh(A1111View):
    required_scopes = {"POST": "read"}

    def post(self, request):
        return null_response()


def decoded_image(value) -> PILImage.Image:
    """A base64 image (a data: URL or bare), opened without decoding its pixels."""
    if not isinstance(value, str) or not value.strip():
        raise Refusal({"image": "must be a base64-encoded PNG"}, 422)
    text = value.strip()
    if text.startswith("data:"):
        text = text.split(",", 1)[-1]
    try:
        image = PILImage.open(io.BytesIO(base64.b64decode(text)))
    except (binascii.Error, ValueError, OSError, UnidentifiedImageError):
        raise Refusal({"image": "is not a base64-encoded image"}, 422) from None
    if image.width * image.height > MAX_PNG_PIXELS:
        raise Refusal({"image": f"is larger than {MAX_PNG_PIXELS} pixels"}, 422)
    return image


def infotext_dict(fields: dict, extra: dict) -> dict:
    """A1111's parsed infotext keys ("Prompt", "Steps", "Size-1", …) from the reader's fields."""
    keys = {"prompt": "Prompt", "negative_prompt": "Negative prompt", "steps": "Steps", "sampler": "Sampler",
            "guidance_scale": "CFG scale", "seed": "Seed", "width": "Size-1", "height": "Size-2",
            "autoguidance_scale": "Autoguidance scale", "eta": "Eta"}
    keys |= {"denoising_strength": "Denoising strength", "hr_denoising_strength": "Denoising strength",
             "mask_blur": "Mask blur", "inpaint_full_res_padding": "Masked area padding",
             "hr_scale": "Hires upscale", "hr_resize_x": "Hires resize-1", "hr_resize_y": "Hires resize-2",
             "hr_second_pass_steps": "Hires steps", "hr_upscaler": "Hires upscaler", "hr_sampler_name": "Hires sampler",
             "hr_prompt": "Hires prompt", "hr_negative_prompt": "Hires negative prompt"}
    parameters = {label: fields[name] for name, label in keys.items() if name in fields}
    if fields.get("inpaint_full_res"):
        parameters["Inpaint area"] = "Only masked"
    if fields.get("inpainting_mask_invert"):
        parameters["Mask mode"] = "Inpaint not masked"
    parameters.setdefault("Negative prompt", "")
    return {**parameters, **extra}


class PngInfo(A1111View):
    required_scopes = {"POST": "read"}

    @extend_schema(tags=["a1111"], summary="A1111 png-info: the generation parameters a PNG carries",
                   request=inline_serializer("PNGInfoRequest", {"image": Text(help_text="Base64 PNG (or data: URL)")}),
                   responses={200: inline_serializer("PNGInfoResponse", {
                       "info": Text(help_text="The infotext (A1111's parameters chunk), or empty"),
                       "items": serializers.DictField(help_text="The image's other text chunks"),
                       "parameters": serializers.DictField(help_text="The infotext parsed, A1111's keys")})})
    def post(self, request):
        body = request.data if isinstance(request.data, dict) else {}
        image = decoded_image(body.get("image"))
        try:
            image.load()  # text chunks after the pixels are read only then
        except (OSError, ValueError) as error:
            raise Refusal({"image": f"could not be read ({type(error).__name__})"}, 422) from None
        chunks = {key: value for key, value in (getattr(image, "text", None) or image.info).items()
                  if isinstance(key, str) and isinstance(value, str)}
        info = chunks.pop("parameters", "")
        parameters: dict = {}
        if info and len(info.strip().rsplit("\n", 1)[-1]) <= MAX_INFOTEXT_LINE:
            parameters = infotext_dict(*parse_parameters(info))  # the ML core's infotext reader
        return Response({"info": info, "items": chunks, "parameters": parameters})


@extend_schema(exclude=True)  # nothing to describe (no input, no credentials); docs/API.md lists it
class Ping(A1111View):
    """Answers `{}` to anyone, as A1111 does: no credentials needed (a client checking the server is up)."""

    authentication_classes = []
    permission_classes = [AllowAny]

    def get(self, request):
        return Response({})
