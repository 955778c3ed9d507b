"""The generation request: one validation function for every entry point.

``validate_request`` turns raw input -- a JSON body, an HTML form's strings, CLI options, or
fields read back from a PNG -- into a frozen :class:`GenerationRequest`, or raises
:class:`RequestValidationError` whose ``errors`` maps each bad field to a message that names
the allowed range. What a request may ask of a model, and what it gets when it leaves a field
out, is the model's :class:`ModelLimits`; a model directory states its own defaults in
``ldmsite_defaults.json`` (:func:`read_model_defaults`). Nothing here imports torch, so the web
process can validate (and the registry read a model's defaults) cheaply.
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .samplers import SAMPLERS, resolve_sampler

MAX_PROMPT_CHARS = 1000
MAX_SEED = 2**32 - 1  # A1111's range; image k uses seed + k, which torch accepts beyond it
MAX_GUIDANCE_SCALE = 30.0
MAX_CLIP_GUIDANCE_SCALE = 5000.0
MAX_AUTOGUIDANCE_SCALE = 10.0
MAX_CLIP_CUTOUTS = 64
MAX_CLIP_GUIDANCE_EVERY = 150

# Image to image (A1111's img2img tab and its hires fix). A source image and mask are not request
# fields -- they travel beside the request (``engine.SourceImages``); the request says what to do
# with them.
MODES = ("txt2img", "img2img", "inpaint", "outpaint")
SOURCE_MODES = ("img2img", "inpaint", "outpaint")  # the modes that need a source image
RESIZE_MODES = {0: "Just resize", 1: "Crop and resize", 2: "Resize and fill"}  # A1111's numbering
INPAINTING_FILLS = {0: "fill", 1: "original", 2: "latent noise", 3: "latent nothing"}  # A1111's numbering
# Hires fix upscalers: the latent ones interpolate the first pass's latents (A1111's
# latent-upscale-modes), the others resample the decoded image (Pillow) before it is encoded again.
LATENT_UPSCALERS = {"Latent": "bilinear", "Latent (antialiased)": "bilinear-antialiased",
                    "Latent (bicubic)": "bicubic", "Latent (bicubic antialiased)": "bicubic-antialiased",
                    "Latent (nearest)": "nearest", "Latent (nearest-exact)": "nearest-exact"}
IMAGE_UPSCALERS = ("None", "Lanczos", "Nearest", "Bicubic")  # "None": a plain Lanczos resize, as A1111
HR_UPSCALERS: tuple[str, ...] = (*LATENT_UPSCALERS, *IMAGE_UPSCALERS)
MAX_MASK_BLUR = 64
MAX_INPAINT_PADDING = 256
MAX_HR_SCALE = 4.0


class RequestValidationError(ValueError):
    """Raised by :func:`validate_request`; ``errors`` is ``{field_name: message}``."""

    def __init__(self, errors: Mapping[str, str]):
        self.errors = dict(errors)
        super().__init__("; ".join(f"{name}: {message}" for name, message in self.errors.items()))


class UnsupportedRequest(ValueError):
    """The engine refuses a request this model or these source pictures cannot serve (a CLIP-guided
    request to a model without CLIP, txt2img on an inpainting-only model, a mask of another size).
    The message starts with the field it is about and is meant for the person who asked. Defined
    here, beside the request, so the worker can tell it from a failure without torch."""


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message names the source and what to do about it.

    Defined here, beside the model's limits, so the web process can catch it without torch."""

    def __init__(self, source: str, message: str):
        self.source = source
        super().__init__(message)


class ModelDefaultsError(ModelLoadError):
    """A model directory's ``ldmsite_defaults.json`` is malformed; ``path`` is the file and ``key``
    the offending key (``None`` when the file as a whole is unreadable)."""

    def __init__(self, path: str | Path, key: str | None, problem: str):
        self.path = Path(path)
        self.key = key
        where = f"key '{key}' " if key is not None else ""
        super().__init__(str(self.path.parent), (
            f"{self.path}: {where}{problem}. Fix or remove the file ({MODEL_DEFAULTS_FILE} states the model's "
            f"default request fields; allowed keys: {', '.join(MODEL_DEFAULTS_KEYS)})."))


# A model directory's own defaults (see read_model_defaults and docs/MODEL.md).
MODEL_DEFAULTS_FILE = "ldmsite_defaults.json"

# The ModelLimits fields a model states (in its directory's defaults file, or staff in the registry:
# the DiffusionModel fields of the same names). The rest follows from them or from what the
# directory holds (clip/, guide_unet/).
MODEL_DEFAULTS_KEYS: tuple[str, ...] = (
    "default_width", "default_height", "max_width", "max_height", "default_steps", "max_steps",
    "default_sampler", "default_guidance_scale", "default_autoguidance_scale",
)


@dataclass(frozen=True)
class ModelLimits:
    """What a model accepts, and its defaults.

    Build one for a model with :meth:`for_model`: ``LoadedModel.limits`` (the engine and the CLI)
    and ``DiffusionModel.limits()`` (the site) both do, so the same stated values give the same
    limits everywhere.
    """

    max_width: int = 2048
    max_height: int = 2048
    min_width: int = 64
    min_height: int = 64
    max_steps: int = 150
    max_num_images: int = 8
    default_width: int = 512
    default_height: int = 512
    default_steps: int = 25
    default_sampler: str = "DPM++ 2M Karras"
    default_guidance_scale: float = 7.0
    default_autoguidance_scale: float = 0.0
    size_multiple: int = 8
    has_clip: bool = True  # False: CLIP guidance is refused at validation time
    has_guide_unet: bool = False  # False: autoguidance is refused at validation time

    @classmethod
    def for_model(cls, *, has_clip: bool, has_guide_unet: bool, **stated: Any) -> "ModelLimits":
        """A model's limits from its stated values (keys of ``MODEL_DEFAULTS_KEYS``; the others keep
        the class defaults) and what it has. Small models (the built-in one works at 64x64) may go
        below the usual 64 px floor, down to their default size."""
        unknown = set(stated) - set(MODEL_DEFAULTS_KEYS)
        if unknown:
            raise TypeError(f"not a stated model default: {', '.join(sorted(unknown))}")
        limits = cls(has_clip=has_clip, has_guide_unet=has_guide_unet, **stated)
        return dataclasses.replace(limits, min_width=min(limits.min_width, limits.default_width),
                                   min_height=min(limits.min_height, limits.default_height))

    def stated(self) -> dict[str, Any]:
        """The values a model states (``MODEL_DEFAULTS_KEYS``): what the registry stores for it."""
        return {key: getattr(self, key) for key in MODEL_DEFAULTS_KEYS}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class GenerationRequest:
    """A validated text-to-image job. Build it with :func:`validate_request`."""

    prompt: str
    negative_prompt: str = ""
    width: int = 512
    height: int = 512
    steps: int = 25
    guidance_scale: float = 7.0
    autoguidance_scale: float = 0.0  # 0 = off; needs a model with a guide UNet (see autoguidance.py)
    sampler: str = "DPM++ 2M Karras"
    seed: int = 0
    num_images: int = 1
    eta: float = 0.0
    clip_guidance_scale: float = 0.0  # 0 = off
    clip_cutouts: int = 4
    clip_guidance_every: int = 4
    clip_guidance_start: float = 0.2
    clip_guidance_end: float = 0.8
    # Image to image. ``mode`` says what the source images (beside the request) are for.
    mode: str = "txt2img"  # one of MODES
    denoising_strength: float = 0.75  # img2img/inpaint/outpaint: how much of the source is repainted
    resize_mode: int = 0  # RESIZE_MODES: how a source of another size is fitted to width x height
    mask_blur: int = 4  # pixels of Gaussian blur on the mask's edge
    inpainting_fill: int = 1  # INPAINTING_FILLS: what the masked area starts from
    inpaint_full_res: bool = False  # repaint only the masked region, at full resolution, then paste back
    inpaint_full_res_padding: int = 32  # pixels of context around that region
    inpainting_mask_invert: bool = False  # repaint the black of the mask instead of the white
    outpaint_left: int = 0  # outpaint: pixels added on each side of the (width x height) source
    outpaint_right: int = 0
    outpaint_top: int = 0
    outpaint_bottom: int = 0
    # Hires fix (txt2img only): a second img2img pass at a larger size over the first pass's result.
    enable_hr: bool = False
    hr_scale: float = 2.0
    hr_resize_x: int = 0  # 0: width x hr_scale (one of the two given: the other keeps the aspect ratio)
    hr_resize_y: int = 0
    hr_upscaler: str = "Latent"  # one of HR_UPSCALERS
    hr_second_pass_steps: int = 0  # 0: the same as steps
    hr_denoising_strength: float = 0.7
    hr_prompt: str = ""  # "": the prompt
    hr_negative_prompt: str = ""  # "": the negative prompt
    hr_sampler_name: str = ""  # "": the sampler
    # LoRAs: (name, weight) pairs, from the ``loras`` field and the prompt's ``<lora:name:weight>``
    # tags (which the validator takes out of the prompt, as A1111 does). Names only: the caller
    # hands the engine the files (``generate(..., loras={name: file})``, see :mod:`.lora`).
    loras: tuple[tuple[str, float], ...] = ()

    @property
    def seeds(self) -> list[int]:
        """Seed of each image: image k uses ``seed + k``."""
        return [self.seed + k for k in range(self.num_images)]

    @property
    def clip_guidance(self) -> bool:
        return self.clip_guidance_scale > 0

    @property
    def has_source(self) -> bool:
        """Whether the job starts from a source image (img2img, inpaint, outpaint)."""
        return self.mode in SOURCE_MODES

    @property
    def hr_size(self) -> tuple[int, int]:
        """(width, height) of the hires fix's second pass (meaningful when ``enable_hr``)."""
        return hires_size(self.width, self.height, self.hr_scale, self.hr_resize_x, self.hr_resize_y)

    @property
    def output_size(self) -> tuple[int, int]:
        """(width, height) of the images the job makes."""
        if self.mode == "outpaint":
            return (self.width + self.outpaint_left + self.outpaint_right,
                    self.height + self.outpaint_top + self.outpaint_bottom)
        if self.mode == "txt2img" and self.enable_hr:
            return self.hr_size
        return self.width, self.height

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON data (``loras`` as ``[[name, weight], ...]``, as JSON gives it back)."""
        data = dataclasses.asdict(self)
        data["loras"] = [[name, weight] for name, weight in self.loras]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GenerationRequest":
        """Rebuild a stored request; keys that are not request fields (e.g. metadata) are ignored.

        Values are trusted (they were validated when stored) but coerced to the field types, so a
        JSON round trip gives an equal object.
        """
        kwargs = {}
        for f in dataclasses.fields(cls):
            if f.name in data and data[f.name] is not None:
                kwargs[f.name] = _FIELD_TYPES[f.type](data[f.name])
        return cls(**kwargs)


def _lora_pairs(value: Any) -> tuple[tuple[str, float], ...]:
    """A stored ``loras`` value -- ``[[name, weight], ...]`` (JSON's spelling of the tuple) or
    ``[{"name": ..., "weight": ...}, ...]`` -- as the request's tuple of (name, weight) pairs."""
    pairs = []
    for item in value or ():
        if isinstance(item, Mapping):
            pairs.append((str(item["name"]), float(item.get("weight", 1.0))))
        else:
            name, weight = item
            pairs.append((str(name), float(weight)))
    return tuple(pairs)


_FIELD_TYPES = {"str": str, "int": int, "float": float, "bool": bool,  # annotations are strings here
                "tuple[tuple[str, float], ...]": _lora_pairs}
NUL_MESSAGE = "must not contain NUL characters (\\x00)"  # PostgreSQL stores no NUL in text or JSON

REQUEST_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(GenerationRequest))

_EMPTY = (None, "")


def _as_text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError
    return value


# Numbers from clients are bounded before Python converts them: a 400-digit JSON integer would
# overflow float(), a 5000-digit string make int() refuse, and str.isdigit()/int()/float() accept
# Unicode digits ("²" passes isdigit() but not int(); "١٢٨" and "８" pass int()) and spellings
# ("1_0", "nan", "inf") no client means. Every request field goes through these two.
MAX_NUMBER_CHARS = 32  # "-1.2345678901234567e-300" fits; no field needs more
MAX_NUMBER_MAGNITUDE = 2**63 - 1  # a database's BigInteger; every field's range is far inside it
_NUMBER_CHARS = frozenset("0123456789+-.eE")


def _number_text(value: str) -> str:
    """A number written as text: ASCII digits, sign, point and exponent only, at most
    ``MAX_NUMBER_CHARS`` of them once surrounding spaces are stripped (linear, bounded)."""
    text = value.strip(" \t\r\n")
    if not text or len(text) > MAX_NUMBER_CHARS or not _NUMBER_CHARS.issuperset(text):
        raise ValueError
    return text


def whole_number(value: Any) -> int:
    """A whole number from JSON (int, or a float with no fraction) or text ("512", " 512 ", "512.0");
    ``TypeError`` for other types, ``ValueError`` for anything else -- Unicode digits, "1_0", a
    number beyond ``MAX_NUMBER_MAGNITUDE`` -- without converting anything unbounded."""
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        number = value
    elif isinstance(value, float):
        if not math.isfinite(value) or not value.is_integer() or abs(value) > MAX_NUMBER_MAGNITUDE:
            raise ValueError
        number = int(value)
    elif isinstance(value, str):
        text = _number_text(value)
        try:
            number = int(text)
        except ValueError:
            real = float(text)  # "512.0" from some clients
            if not math.isfinite(real) or not real.is_integer() or abs(real) > MAX_NUMBER_MAGNITUDE:
                raise ValueError from None
            number = int(real)
    else:
        raise TypeError
    if abs(number) > MAX_NUMBER_MAGNITUDE:
        raise ValueError
    return number


def real_number(value: Any) -> float:
    """A finite number from JSON (int or float) or text ("7.5", "1e-3"); ``TypeError`` for other
    types, ``ValueError`` for anything else (as :func:`whole_number`; NaN and infinities too)."""
    if isinstance(value, bool):
        raise TypeError
    if isinstance(value, int):
        if abs(value) > MAX_NUMBER_MAGNITUDE:
            raise ValueError
        number = float(value)
    elif isinstance(value, float):
        number = value
    elif isinstance(value, str):
        number = float(_number_text(value))
    else:
        raise TypeError
    if not math.isfinite(number):
        raise ValueError
    return number


def _fmt(number: float) -> str:
    return f"{number:g}"


_TRUE = ("true", "on", "1", "yes")
_FALSE = ("false", "off", "0", "no")


def yes_or_no(value: Any) -> bool:
    """A boolean from JSON (true/false, 0/1) or a form ("on", "true", "1", "false", "0", ...);
    ``ValueError`` for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and len(value) <= 8:
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    raise ValueError


def _size_multiple_down(value: float, multiple: int = 8) -> int:
    return max(multiple, int(value) // multiple * multiple)


def hires_size(width: int, height: int, scale: float, resize_x: int, resize_y: int) -> tuple[int, int]:
    """The hires fix's target size, as A1111 computes it: ``hr_resize_x/y`` when given (one of them
    alone: the other keeps the first pass's aspect ratio), else width and height times ``scale``;
    rounded down to a multiple of 8."""
    if resize_x and resize_y:
        return resize_x, resize_y
    if resize_x:
        return resize_x, _size_multiple_down(resize_x * height / width)
    if resize_y:
        return _size_multiple_down(resize_y * width / height), resize_y
    return _size_multiple_down(width * scale), _size_multiple_down(height * scale)


def validate_request(raw: Mapping[str, Any], limits: ModelLimits | None = None) -> GenerationRequest:
    """Turn raw input into a :class:`GenerationRequest` or raise :class:`RequestValidationError`.

    Accepts JSON types and the strings an HTML form posts ("512", "7.5", "" for "use the default").
    Unknown fields are errors (strip fields you do not own before calling). A missing, empty or
    ``-1`` seed becomes a random one, which the returned request records.
    """
    limits = limits or ModelLimits()
    if not isinstance(raw, Mapping):
        raise RequestValidationError({"request": "must be an object of field: value pairs"})
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}

    for name in raw:
        if name not in REQUEST_FIELDS:
            errors[str(name)] = f"unknown field; allowed fields are: {', '.join(REQUEST_FIELDS)}"

    def get(name: str) -> Any:
        value = raw.get(name)
        return None if value in _EMPTY else value

    # prompt / negative prompt
    prompt = raw.get("prompt")
    if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        errors["prompt"] = f"is required: 1 to {MAX_PROMPT_CHARS} characters"
    elif not isinstance(prompt, str):
        errors["prompt"] = f"must be text of 1 to {MAX_PROMPT_CHARS} characters"
    elif len(prompt) > MAX_PROMPT_CHARS:
        errors["prompt"] = f"is {len(prompt)} characters; the maximum is {MAX_PROMPT_CHARS}"
    elif "\x00" in prompt:
        errors["prompt"] = NUL_MESSAGE
    else:
        values["prompt"] = prompt.strip()

    negative = raw.get("negative_prompt")
    if negative is None:
        values["negative_prompt"] = ""
    elif not isinstance(negative, str):
        errors["negative_prompt"] = f"must be text of 0 to {MAX_PROMPT_CHARS} characters"
    elif len(negative) > MAX_PROMPT_CHARS:
        errors["negative_prompt"] = f"is {len(negative)} characters; the maximum is {MAX_PROMPT_CHARS}"
    elif "\x00" in negative:
        errors["negative_prompt"] = NUL_MESSAGE
    else:
        values["negative_prompt"] = negative.strip()

    def integer(name: str, default: int, low: int, high: int, multiple: int = 1) -> None:
        value = get(name)
        if multiple > 1:
            allowed = f"a multiple of {multiple} from {low} to {high}"
        else:
            allowed = f"a whole number from {low} to {high}"
        if value is None:
            values[name] = default
            return
        try:
            number = whole_number(value)
        except (TypeError, ValueError):
            errors[name] = f"must be {allowed}"
            return
        if not low <= number <= high or number % multiple:
            errors[name] = f"must be {allowed} (got {number})"
            return
        values[name] = number

    def real(name: str, default: float, low: float, high: float) -> None:
        value = get(name)
        allowed = f"a number from {_fmt(low)} to {_fmt(high)}"
        if value is None:
            values[name] = float(default)
            return
        try:
            number = real_number(value)
        except (TypeError, ValueError):
            errors[name] = f"must be {allowed}"
            return
        if not low <= number <= high:
            errors[name] = f"must be {allowed} (got {_fmt(number)})"
            return
        values[name] = number

    integer("width", limits.default_width, limits.min_width, limits.max_width, limits.size_multiple)
    integer("height", limits.default_height, limits.min_height, limits.max_height, limits.size_multiple)
    integer("steps", limits.default_steps, 1, limits.max_steps)
    real("guidance_scale", limits.default_guidance_scale, 0.0, MAX_GUIDANCE_SCALE)
    real("autoguidance_scale", limits.default_autoguidance_scale if limits.has_guide_unet else 0.0,
         0.0, MAX_AUTOGUIDANCE_SCALE)
    if values.get("autoguidance_scale", 0) > 0 and not limits.has_guide_unet:
        errors["autoguidance_scale"] = "must be 0: this model has no guide UNet (guide_unet/) for autoguidance"
    integer("num_images", 1, 1, limits.max_num_images)
    real("eta", 0.0, 0.0, 1.0)

    sampler = get("sampler")
    if sampler is None:
        values["sampler"] = resolve_sampler(limits.default_sampler)
    else:
        try:
            values["sampler"] = resolve_sampler(_as_text(sampler))
        except (KeyError, TypeError):
            errors["sampler"] = f"must be one of: {', '.join(SAMPLERS)}"

    seed = get("seed")
    try:
        seed_number = None if seed is None else whole_number(seed)
    except (TypeError, ValueError):
        errors["seed"] = f"must be a whole number from 0 to {MAX_SEED}, or empty/-1 for a random seed"
    else:
        if seed_number is None or seed_number == -1:
            values["seed"] = secrets.randbelow(MAX_SEED + 1)
        elif not 0 <= seed_number <= MAX_SEED:
            errors["seed"] = f"must be a whole number from 0 to {MAX_SEED}, or empty/-1 for a random seed"
        else:
            values["seed"] = seed_number

    real("clip_guidance_scale", 0.0, 0.0, MAX_CLIP_GUIDANCE_SCALE)
    integer("clip_cutouts", GenerationRequest.clip_cutouts, 1, MAX_CLIP_CUTOUTS)
    integer("clip_guidance_every", GenerationRequest.clip_guidance_every, 1, MAX_CLIP_GUIDANCE_EVERY)
    real("clip_guidance_start", GenerationRequest.clip_guidance_start, 0.0, 1.0)
    real("clip_guidance_end", GenerationRequest.clip_guidance_end, 0.0, 1.0)

    if values.get("clip_guidance_scale", 0) > 0:
        if not limits.has_clip:
            errors["clip_guidance_scale"] = "must be 0: this model has no CLIP model configured for guidance"
        start, end = values.get("clip_guidance_start"), values.get("clip_guidance_end")
        if start is not None and end is not None and not start < end:
            errors["clip_guidance_end"] = (
                f"must be greater than clip_guidance_start ({_fmt(start)}); both are fractions from 0 to 1"
            )

    _validate_image_fields(get, integer, real, values, errors, limits)
    _validate_loras(raw.get("loras"), values, errors)

    if errors:
        raise RequestValidationError(errors)
    return GenerationRequest(**values)


def _validate_image_fields(get, integer, real, values: dict[str, Any], errors: dict[str, str],
                           limits: ModelLimits) -> None:
    """The image-to-image and hires-fix fields of :func:`validate_request` (same helpers)."""

    def choice(name: str, default: str, allowed: tuple[str, ...]) -> None:
        value = get(name)
        if value is None:
            values[name] = default
        elif isinstance(value, str) and value in allowed:
            values[name] = value
        else:
            errors[name] = f"must be one of: {', '.join(allowed)}"

    def flag(name: str) -> None:
        value = get(name)
        try:
            values[name] = False if value is None else yes_or_no(value)
        except ValueError:
            errors[name] = "must be true or false"

    def text(name: str) -> None:
        value = get(name)
        if value is None:
            values[name] = ""
        elif not isinstance(value, str):
            errors[name] = f"must be text of 0 to {MAX_PROMPT_CHARS} characters"
        elif len(value) > MAX_PROMPT_CHARS:
            errors[name] = f"is {len(value)} characters; the maximum is {MAX_PROMPT_CHARS}"
        elif "\x00" in value:
            errors[name] = NUL_MESSAGE
        else:
            values[name] = value.strip()

    choice("mode", "txt2img", MODES)
    real("denoising_strength", GenerationRequest.denoising_strength, 0.0, 1.0)
    integer("resize_mode", 0, 0, max(RESIZE_MODES))
    integer("mask_blur", GenerationRequest.mask_blur, 0, MAX_MASK_BLUR)
    integer("inpainting_fill", GenerationRequest.inpainting_fill, 0, max(INPAINTING_FILLS))
    flag("inpaint_full_res")
    integer("inpaint_full_res_padding", GenerationRequest.inpaint_full_res_padding, 0, MAX_INPAINT_PADDING)
    flag("inpainting_mask_invert")
    for side in ("left", "right"):
        integer(f"outpaint_{side}", 0, 0, limits.max_width, limits.size_multiple)
    for side in ("top", "bottom"):
        integer(f"outpaint_{side}", 0, 0, limits.max_height, limits.size_multiple)
    flag("enable_hr")
    real("hr_scale", GenerationRequest.hr_scale, 1.0, MAX_HR_SCALE)
    integer("hr_resize_x", 0, 0, limits.max_width, limits.size_multiple)
    integer("hr_resize_y", 0, 0, limits.max_height, limits.size_multiple)
    choice("hr_upscaler", GenerationRequest.hr_upscaler, HR_UPSCALERS)
    integer("hr_second_pass_steps", 0, 0, limits.max_steps)
    real("hr_denoising_strength", GenerationRequest.hr_denoising_strength, 0.0, 1.0)
    text("hr_prompt")
    text("hr_negative_prompt")
    sampler = get("hr_sampler_name")
    if sampler is None:
        values["hr_sampler_name"] = ""
    else:
        try:
            values["hr_sampler_name"] = resolve_sampler(_as_text(sampler))
        except (KeyError, TypeError):
            errors["hr_sampler_name"] = f"must be empty (the sampler) or one of: {', '.join(SAMPLERS)}"

    mode = values.get("mode")
    steps = values.get("steps")
    if mode in SOURCE_MODES:
        # diffusers runs int(steps x strength) of the steps; none at all would return the source untouched
        strength = values.get("denoising_strength")
        if strength is not None and steps is not None and int(steps * strength) < 1:
            errors["denoising_strength"] = (
                f"is too low for {steps} steps: at least one step must run (steps x denoising_strength >= 1)")
        if values.get("enable_hr"):
            errors["enable_hr"] = "is for text to image only (mode txt2img); run img2img at the larger size instead"
    if mode == "outpaint":
        sides = [values.get(f"outpaint_{side}") for side in ("left", "right", "top", "bottom")]
        if None not in sides and not any(sides):
            errors["outpaint_left"] = "outpainting needs at least one side to extend: set outpaint_left, " \
                                      "outpaint_right, outpaint_top or outpaint_bottom (pixels, a multiple of 8)"
        width, height = values.get("width"), values.get("height")
        if None not in sides and width and height:
            wide, tall = width + sides[0] + sides[1], height + sides[2] + sides[3]
            if wide > limits.max_width:
                errors["outpaint_right"] = (f"makes the image {wide} px wide (width + outpaint_left + outpaint_right); "
                                            f"the maximum is {limits.max_width}")
            if tall > limits.max_height:
                errors["outpaint_bottom"] = (f"makes the image {tall} px tall (height + outpaint_top + "
                                             f"outpaint_bottom); the maximum is {limits.max_height}")
    elif mode is not None:
        for side in ("left", "right", "top", "bottom"):
            if values.get(f"outpaint_{side}"):
                errors[f"outpaint_{side}"] = "is for mode outpaint only"
    if mode == "txt2img" and values.get("enable_hr"):
        width, height = values.get("width"), values.get("height")
        scale, rx, ry = values.get("hr_scale"), values.get("hr_resize_x"), values.get("hr_resize_y")
        if None not in (width, height, scale, rx, ry):
            wide, tall = hires_size(width, height, scale, rx, ry)
            name = "hr_resize_x" if rx or ry else "hr_scale"
            if wide > limits.max_width or tall > limits.max_height:
                errors[name] = (f"makes the hires image {wide}x{tall}; the maximum is "
                                f"{limits.max_width}x{limits.max_height}")
            elif wide < width or tall < height:
                errors[name] = f"makes the hires image {wide}x{tall}, smaller than the first pass ({width}x{height})"
        hr_steps = values.get("hr_second_pass_steps") or steps
        strength = values.get("hr_denoising_strength")
        if hr_steps and strength is not None and int(hr_steps * strength) < 1:
            errors["hr_denoising_strength"] = (
                f"is too low for {hr_steps} steps: at least one step must run (steps x hr_denoising_strength >= 1)")


# ------------------------------------------------------------------------------------- LoRAs

MAX_LORAS = 8  # distinct LoRAs in one request
MAX_LORA_NAME_CHARS = 100
MAX_LORA_WEIGHT = 4.0  # weights from -4 to 4
LORA_TAG = "<lora:"  # A1111's extra-network syntax: <lora:name> or <lora:name:weight>
_LORA_NAME_FORBIDDEN = frozenset("<>:,\"")  # cannot be written in a tag or A1111's "Lora hashes"
_MAX_LORAS_TEXT = MAX_LORAS * (MAX_LORA_NAME_CHARS + MAX_NUMBER_CHARS + 2)


def lora_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot be a LoRA's name (``None`` when it can): text of 1 to 100 characters,
    no control characters and none of ``< > : , "`` (which a ``<lora:...>`` tag or A1111's
    ``Lora hashes`` could not hold)."""
    if not isinstance(name, str):
        return "a LoRA name must be text"
    if not 1 <= len(name) <= MAX_LORA_NAME_CHARS or name != name.strip():
        return f"a LoRA name is 1 to {MAX_LORA_NAME_CHARS} characters without surrounding spaces"
    if any(character in _LORA_NAME_FORBIDDEN or not character.isprintable() for character in name):
        return f"LoRA name {name!r} holds a character it may not (< > : , \" or a control character)"
    return None


def _lora_weight(value: Any) -> float:
    """A weight from -4 to 4 (``ValueError`` otherwise)."""
    weight = real_number(value)
    if not -MAX_LORA_WEIGHT <= weight <= MAX_LORA_WEIGHT:
        raise ValueError
    return weight


_WEIGHT_MESSAGE = f"a LoRA weight is a number from {_fmt(-MAX_LORA_WEIGHT)} to {_fmt(MAX_LORA_WEIGHT)}"


def parse_lora_tags(text: str) -> tuple[str, list[tuple[str, float]], list[str]]:
    r"""Take A1111's ``<lora:name>`` / ``<lora:name:weight>`` tags out of a prompt.

    Returns (the prompt without them, the (name, weight) pairs in order, problems). A tag is
    ``<lora:`` up to the next ``>``, as A1111's ``<(\w+):([^>]+)>`` reads it (no escapes: a
    backslash before it changes nothing); the weight defaults to 1. Where a tag is cut out, the
    spaces around it become one (``"a <lora:x:1> cat"`` -> ``"a cat"``). A tag with a bad name or
    weight, or more parts (A1111's separate text-encoder / UNet weights), is a problem and stays
    in the text. One pass over the text: linear in its length, whatever it holds.
    """
    pieces: list[str] = []
    pairs: list[tuple[str, float]] = []
    problems: list[str] = []
    position = 0
    while True:
        start = text.find(LORA_TAG, position)
        if start < 0:
            break
        end = text.find(">", start + len(LORA_TAG))
        if end < 0:
            break  # no tag can close after this point
        inner = text.rfind(LORA_TAG, start, end)  # "<lora:<lora:x:1>": the tag is the last opening
        body = text[inner + len(LORA_TAG):end]
        parts = body.split(":")
        name = parts[0].strip()
        problem = lora_name_problem(name)
        weight = 1.0
        if problem is None and len(parts) > 2:
            problem = f"<lora:{body}> has {len(parts)} parts; write <lora:name> or <lora:name:weight>"
        elif problem is None and len(parts) == 2:
            try:
                weight = _lora_weight(parts[1])
            except (TypeError, ValueError):
                problem = f"<lora:{body}>: {_WEIGHT_MESSAGE}"
        if problem is not None:
            problems.append(problem)
            pieces.append(text[position:end + 1])
        else:
            pairs.append((name, weight))
            pieces.append(text[position:inner])
            pieces.append("\0")  # where a tag was: spaces around it are merged below
        position = end + 1
    pieces.append(text[position:])
    if not pairs:
        return text, pairs, problems
    joined = "".join(pieces)
    out: list[str] = []
    for index, chunk in enumerate(joined.split("\0")):
        if index and out and (not out[-1] or out[-1][-1:].isspace()):
            chunk = chunk.lstrip(" \t")
        elif index and chunk[:1] in (" ", "\t") and out:
            out[-1] = out[-1].rstrip(" \t") + " "
            chunk = chunk.lstrip(" \t")
        out.append(chunk)
    return "".join(out).strip(), pairs, problems


def format_lora_tags(loras: "tuple[tuple[str, float], ...] | list") -> str:
    """``<lora:name:weight>`` for each pair, space-separated (what A1111's infotext prompt holds)."""
    return " ".join(f"<lora:{name}:{_fmt(float(weight))}>" for name, weight in loras)


def prompt_with_lora_tags(prompt: str, loras: "tuple[tuple[str, float], ...] | list") -> str:
    """The prompt as A1111 writes it in an infotext: the text with its LoRA tags (appended)."""
    tags = format_lora_tags(loras)
    return f"{prompt} {tags}" if prompt and tags else (prompt or tags)


def _lora_items(value: Any) -> tuple[list[tuple[str, float]], str | None]:
    """The ``loras`` field: ``[{"name": n, "weight": w}, ...]``, ``[[n, w], ...]``, ``["n:w", "n"]``,
    or text ``"n:w, n2"`` (forms, the CLI). Bounded before anything is looked at."""
    if value is None or value == "" or value == [] or value == ():
        return [], None
    shape = (f'must be a list of {{"name": ..., "weight": ...}} (at most {MAX_LORAS}), '
             '[name, weight] pairs, or text "name:weight, name2"')
    if isinstance(value, str):
        if len(value) > _MAX_LORAS_TEXT:
            return [], f"is {len(value)} characters; at most {MAX_LORAS} LoRAs fit in {_MAX_LORAS_TEXT}"
        value = [item for item in (part.strip() for part in value.split(",")) if item]
    if not isinstance(value, (list, tuple)):
        return [], shape
    if len(value) > MAX_LORAS:
        return [], f"has {len(value)} LoRAs; at most {MAX_LORAS} per request"
    pairs: list[tuple[str, float]] = []
    for item in value:
        if isinstance(item, Mapping):
            if set(item) - {"name", "weight"} or "name" not in item:
                return [], shape
            name, weight = item["name"], item.get("weight", 1.0)
        elif isinstance(item, (list, tuple)) and 1 <= len(item) <= 2:
            name, weight = item[0], (item[1] if len(item) == 2 else 1.0)
        elif isinstance(item, str) and len(item) <= MAX_LORA_NAME_CHARS + MAX_NUMBER_CHARS + 1:
            name, _, weight = item.partition(":")
            weight = weight if weight.strip() else 1.0
        else:
            return [], shape
        name = name.strip() if isinstance(name, str) else name
        problem = lora_name_problem(name)
        if problem is not None:
            return [], problem
        try:
            pairs.append((name, _lora_weight(weight)))
        except (TypeError, ValueError):
            return [], f"{_WEIGHT_MESSAGE} (LoRA {name!r})"
    return pairs, None


def _validate_loras(field: Any, values: dict[str, Any], errors: dict[str, str]) -> None:
    """``loras`` of :func:`validate_request`: the field's pairs, then the prompt's and the hires
    prompt's ``<lora:...>`` tags (taken out of those texts). A name given more than once gets the
    sum of its weights (A1111 applies each mention). At most ``MAX_LORAS`` names."""
    pairs, problem = _lora_items(field)
    if problem is not None:
        errors["loras"] = problem
    for text_field in ("prompt", "hr_prompt"):
        text = values.get(text_field)
        if not text or LORA_TAG not in text:
            continue
        clean, found, problems = parse_lora_tags(text)
        if problems:
            errors[text_field] = problems[0]
            continue
        values[text_field] = clean
        pairs += found
    merged: dict[str, float] = {}
    for name, weight in pairs:
        merged[name] = merged.get(name, 0.0) + weight
    if len(merged) > MAX_LORAS and "loras" not in errors:
        errors["loras"] = f"names {len(merged)} LoRAs (field and prompt tags together); at most {MAX_LORAS}"
    for name, weight in merged.items():
        if not -MAX_LORA_WEIGHT <= weight <= MAX_LORA_WEIGHT and "loras" not in errors:
            errors["loras"] = f"LoRA {name!r} adds up to weight {_fmt(weight)}; {_WEIGHT_MESSAGE}"
    values["loras"] = tuple(merged.items())


def check_lora_names(loras: "GenerationRequest | tuple | list", known: Any) -> None:
    """For the site: refuse a request naming a LoRA that is not in ``known`` (a set of the names
    the person may use) with a field-named :class:`RequestValidationError` (``loras``)."""
    pairs = loras.loras if isinstance(loras, GenerationRequest) else loras
    unknown = [name for name, _ in pairs if name not in known]
    if unknown:
        listed = ", ".join(repr(name) for name in unknown[:5])
        raise RequestValidationError({"loras": f"unknown LoRA{'s' if len(unknown) > 1 else ''}: {listed} "
                                               "(not found, or not yours to use)"})


# ------------------------------------------------------------------------- a model's own defaults

_SIZE_KEYS = ("default_width", "default_height", "max_width", "max_height")
_STEP_KEYS = ("default_steps", "max_steps")
_SCALE_RANGES = {"default_guidance_scale": MAX_GUIDANCE_SCALE, "default_autoguidance_scale": MAX_AUTOGUIDANCE_SCALE}
_DEFAULT_AND_MAXIMUM = (("default_width", "max_width"), ("default_height", "max_height"),
                        ("default_steps", "max_steps"))


def read_model_defaults(directory: str | Path) -> dict[str, Any]:
    """The defaults a model directory states in its ``ldmsite_defaults.json``; ``{}`` without one.

    The file is one JSON object whose keys are ``MODEL_DEFAULTS_KEYS`` (any subset), e.g.
    ``{"default_sampler": "Euler Karras", "default_guidance_scale": 1.5}``; keys starting with
    ``_`` are comments. Sampler names are returned in their canonical spelling. Anything else --
    bad JSON, an unknown key, a value of the wrong type or out of range, a default above its
    stated maximum -- raises :class:`ModelDefaultsError` naming the file and the key.
    """
    path = Path(directory) / MODEL_DEFAULTS_FILE
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise ModelDefaultsError(path, None, f"is not readable JSON ({error})") from error
    if not isinstance(data, dict):
        raise ModelDefaultsError(path, None, "must hold one JSON object of key: value pairs")
    defaults: dict[str, Any] = {}
    for key, value in data.items():
        if key.startswith("_"):
            continue
        if key not in MODEL_DEFAULTS_KEYS:
            raise ModelDefaultsError(path, key, "is not a known default")
        defaults[key] = _stated_value(path, key, value)
    for default, maximum in _DEFAULT_AND_MAXIMUM:
        if default in defaults and maximum in defaults and defaults[default] > defaults[maximum]:
            raise ModelDefaultsError(path, default, f"is {defaults[default]}, above {maximum} ({defaults[maximum]})")
    return defaults


def limits_with_model_defaults(derived: ModelLimits, stated: Mapping[str, Any], directory: str | Path) -> ModelLimits:
    """``derived`` (what the loader reads off the weights) with ``stated`` (the directory's
    :func:`read_model_defaults`) on top; a stated value that leaves a default above its maximum
    is a :class:`ModelDefaultsError`."""
    limits = ModelLimits.for_model(has_clip=derived.has_clip, has_guide_unet=derived.has_guide_unet,
                                   **{**derived.stated(), **stated})
    for default, maximum in _DEFAULT_AND_MAXIMUM:
        if getattr(limits, default) > getattr(limits, maximum):
            key = default if default in stated else maximum
            raise ModelDefaultsError(Path(directory) / MODEL_DEFAULTS_FILE, key, (
                f"leaves {default} ({getattr(limits, default)}) above {maximum} ({getattr(limits, maximum)})"))
    return limits


def _stated_value(path: Path, key: str, value: Any) -> Any:
    if key in _SIZE_KEYS or key in _STEP_KEYS:
        multiple = ModelLimits.size_multiple if key in _SIZE_KEYS else 1
        allowed = f"a positive multiple of {multiple}" if multiple > 1 else "a positive whole number"
        if isinstance(value, bool) or not isinstance(value, int) or value < 1 or value % multiple:
            raise ModelDefaultsError(path, key, f"must be {allowed} (got {value!r})")
        return value
    if key in _SCALE_RANGES:
        high = _SCALE_RANGES[key]
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or not 0 <= value <= high):
            raise ModelDefaultsError(path, key, f"must be a number from 0 to {_fmt(high)} (got {value!r})")
        return float(value)
    try:  # default_sampler
        return resolve_sampler(_as_text(value))
    except (KeyError, TypeError):
        raise ModelDefaultsError(path, key, f"must be one of: {', '.join(SAMPLERS)} (got {value!r})") from None


__all__ = [
    "GenerationRequest",
    "ModelLimits",
    "ModelLoadError",
    "ModelDefaultsError",
    "MODEL_DEFAULTS_FILE",
    "MODEL_DEFAULTS_KEYS",
    "read_model_defaults",
    "limits_with_model_defaults",
    "RequestValidationError",
    "UnsupportedRequest",
    "REQUEST_FIELDS",
    "MODES",
    "SOURCE_MODES",
    "RESIZE_MODES",
    "INPAINTING_FILLS",
    "HR_UPSCALERS",
    "LATENT_UPSCALERS",
    "hires_size",
    "MAX_PROMPT_CHARS",
    "MAX_SEED",
    "MAX_AUTOGUIDANCE_SCALE",
    "validate_request",
    "whole_number",
    "real_number",
    "MAX_NUMBER_CHARS",
    "MAX_NUMBER_MAGNITUDE",
    "MAX_LORAS",
    "MAX_LORA_NAME_CHARS",
    "MAX_LORA_WEIGHT",
    "lora_name_problem",
    "parse_lora_tags",
    "format_lora_tags",
    "prompt_with_lora_tags",
    "check_lora_names",
]
