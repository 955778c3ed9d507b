"""The generate form: renders the fields and carries errors next to them.

Validation itself is `generation.diffusion.validate_request` (via
`services.submit_generation`), the same function the API and CLI use; the bounds and defaults
the form shows come from the same module (the browser's checks only help).
"""

from django import forms

from generation.admission import Refusal
from generation.diffusion.request import (HR_UPSCALERS, INPAINTING_FILLS, MAX_AUTOGUIDANCE_SCALE,
                                          MAX_CLIP_CUTOUTS, MAX_CLIP_GUIDANCE_EVERY, MAX_CLIP_GUIDANCE_SCALE,
                                          MAX_GUIDANCE_SCALE, MAX_HR_SCALE, MAX_INPAINT_PADDING, MAX_MASK_BLUR,
                                          RESIZE_MODES, GenerationRequest, ModelLimits)
from generation.diffusion.samplers import SAMPLERS
from generation.models import DiffusionModel

MAX_ID_DIGITS = 18  # every id fits a database's BigInteger (the API's paths say the same)


def _parsed_id(value, field: str, allowed: str) -> int:
    text = value.strip() if isinstance(value, str) else ""
    if not (0 < len(text) <= MAX_ID_DIGITS and text.isascii() and text.isdigit()):
        shown = f" (got {value[:20]!r})" if isinstance(value, str) else ""
        raise Refusal({field: f"must be {allowed} of 1 to {MAX_ID_DIGITS} digits{shown}"})
    return int(text)


def form_ids(values, field: str) -> list[int]:
    """The object ids a form posted under ``field`` (``request.POST.getlist(field)``), or a
    `Refusal` naming ``field``: an id is 1 to 18 ASCII digits, so neither "²" nor "①" (which
    pass ``str.isdigit()``), nor a number beyond any id, ever reaches ``int()`` or the database."""
    return [_parsed_id(value, field, "ids: whole numbers") for value in values]


def form_id(value, field: str) -> int | None:
    """One id a form posted (``request.POST.get(field)``): None when it is absent or empty, a
    `Refusal` naming ``field`` for anything but an id (as `form_ids`)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return _parsed_id(value, field, "an id: a whole number")


# What the CLIP guidance scale starts at once a person switches it on (a request's default is off).
CLIP_GUIDANCE_SCALE_WHEN_ON = 100.0
REQUEST_DEFAULTS = GenerationRequest.__dataclass_fields__


def request_default(name: str):
    return REQUEST_DEFAULTS[name].default


# The mode switch, as the page names the modes (values: GenerationRequest.mode).
MODE_CHOICES = [("txt2img", "Text"), ("img2img", "Image"), ("inpaint", "Inpaint"), ("outpaint", "Outpaint")]
INPAINTING_FILL_LABELS = {0: "Fill (the colours around it)", 1: "Original (the source's pixels)",
                          2: "Latent noise", 3: "Latent nothing (blank)"}
OUTPAINT_SIDES = ("left", "right", "top", "bottom")
# Which request fields each mode posts (the others stay on the page, hidden, and are not sent: a
# value left in a hidden field never refuses a job).
SOURCE_FIELDS = ("denoising_strength", "resize_mode")
MODE_FIELDS = {
    "txt2img": (),
    "img2img": SOURCE_FIELDS,
    "inpaint": (*SOURCE_FIELDS, "mask_blur", "inpainting_fill", "inpaint_full_res_padding"),
    "outpaint": (*SOURCE_FIELDS, "mask_blur", "inpainting_fill", *(f"outpaint_{side}" for side in OUTPAINT_SIDES)),
}
MODE_FLAGS = {"inpaint": ("inpaint_full_res", "inpainting_mask_invert")}
HIRES_FIELDS = ("hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_denoising_strength", "hr_prompt",
                "hr_negative_prompt")
FORM_TRUE = ("on", "true", "1")
# Every image-to-image and hires field the page shows (each mode posts its own, see mode_fields).
IMAGE_FORM_FIELDS = tuple(dict.fromkeys((*(name for fields in MODE_FIELDS.values() for name in fields),
                                         "inpaint_full_res", "inpainting_mask_invert", "enable_hr",
                                         *HIRES_FIELDS)))


def _number(attrs: dict | None = None, **more) -> forms.NumberInput:
    return forms.NumberInput(attrs={"inputmode": "decimal", **(attrs or {}), **more})


class GenerateForm(forms.Form):
    model = forms.ModelChoiceField(queryset=DiffusionModel.objects.none(), to_field_name="slug", empty_label=None)
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "placeholder": "a large yellow circle in the center on a blue background"}))
    negative_prompt = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    loras = forms.CharField(label="LoRAs", required=False, max_length=1000,
                            widget=forms.TextInput(attrs={"placeholder": "name:0.8, alice/other:1",
                                                          "autocomplete": "off", "spellcheck": "false"}),
                            help_text="LoRAs to apply, name:weight, comma-separated (or <lora:name:weight> in the "
                                      "prompt): your own by name, others' shared ones as owner/name.")
    # The step is a browser hint only (Django's StepValueValidator overflows on a 400-digit number).
    width = forms.IntegerField(min_value=ModelLimits.size_multiple,
                               widget=forms.NumberInput(attrs={"step": ModelLimits.size_multiple}))
    height = forms.IntegerField(min_value=ModelLimits.size_multiple,
                                widget=forms.NumberInput(attrs={"step": ModelLimits.size_multiple}))
    steps = forms.IntegerField(min_value=1, max_value=ModelLimits.max_steps)
    guidance_scale = forms.FloatField(label="Guidance scale (CFG)", min_value=0, max_value=MAX_GUIDANCE_SCALE)
    autoguidance_scale = forms.FloatField(label="Autoguidance", required=False, min_value=0,
                                          max_value=MAX_AUTOGUIDANCE_SCALE,
                                          help_text="Models with a guide UNet only; 0: off")
    sampler = forms.ChoiceField(choices=[(name, name) for name in SAMPLERS])
    seed = forms.IntegerField(required=False, help_text="Empty or -1: random (the seed used is recorded)")
    num_images = forms.IntegerField(label="Images", min_value=1, max_value=ModelLimits.max_num_images,
                                    initial=request_default("num_images"))
    eta = forms.FloatField(required=False, initial=request_default("eta"), help_text="DDIM only")
    clip_guidance = forms.BooleanField(label="CLIP guidance", required=False)
    clip_guidance_scale = forms.FloatField(label="CLIP guidance scale", required=False, min_value=0,
                                           max_value=MAX_CLIP_GUIDANCE_SCALE, initial=CLIP_GUIDANCE_SCALE_WHEN_ON)
    clip_guidance_every = forms.IntegerField(label="Guide every N steps", required=False, min_value=1,
                                             max_value=MAX_CLIP_GUIDANCE_EVERY,
                                             initial=request_default("clip_guidance_every"))
    clip_cutouts = forms.IntegerField(label="Cutouts", required=False, min_value=1, max_value=MAX_CLIP_CUTOUTS,
                                      initial=request_default("clip_cutouts"))

    # Image to image: the mode, the source (a file, or a gallery image by id) and the mask.
    mode = forms.ChoiceField(choices=MODE_CHOICES, required=False, initial="txt2img", widget=forms.RadioSelect)
    init_image = forms.FileField(label="Source image", required=False,
                                 widget=forms.FileInput(attrs={"accept": "image/*"}),
                                 help_text="PNG, JPEG, WebP or GIF, up to 20 MB.")
    source_image = forms.CharField(required=False, widget=forms.HiddenInput)
    mask = forms.FileField(label="Mask file", required=False,
                           widget=forms.FileInput(attrs={"accept": "image/png,image/*"}),
                           help_text="Or upload one: white repaints, black keeps; the source's size.")
    denoising_strength = forms.FloatField(label="Denoising strength", required=False, min_value=0, max_value=1,
                                          initial=request_default("denoising_strength"),
                                          widget=_number(step="0.05", min="0", max="1"),
                                          help_text="0 keeps the source, 1 repaints it entirely")
    resize_mode = forms.TypedChoiceField(label="Resize mode", required=False, coerce=int,
                                         choices=list(RESIZE_MODES.items()), initial=request_default("resize_mode"),
                                         help_text="How a source of another size fits width × height")
    mask_blur = forms.IntegerField(label="Mask blur", required=False, min_value=0, max_value=MAX_MASK_BLUR,
                                   initial=request_default("mask_blur"), widget=_number(), help_text="Pixels")
    inpainting_fill = forms.TypedChoiceField(label="Masked content", required=False, coerce=int,
                                             choices=[(k, INPAINTING_FILL_LABELS[k]) for k in INPAINTING_FILLS],
                                             initial=request_default("inpainting_fill"))
    inpaint_full_res = forms.BooleanField(label="Only the masked area, at full resolution", required=False)
    inpaint_full_res_padding = forms.IntegerField(label="Padding around it", required=False, min_value=0,
                                                  max_value=MAX_INPAINT_PADDING, widget=_number(),
                                                  initial=request_default("inpaint_full_res_padding"),
                                                  help_text="Pixels")
    inpainting_mask_invert = forms.BooleanField(label="Repaint what is not painted (invert the mask)",
                                                required=False)
    outpaint_left = forms.IntegerField(label="Left", required=False, min_value=0, initial=0,
                                       widget=_number(step=ModelLimits.size_multiple, min="0"))
    outpaint_right = forms.IntegerField(label="Right", required=False, min_value=0, initial=0,
                                        widget=_number(step=ModelLimits.size_multiple, min="0"))
    outpaint_top = forms.IntegerField(label="Top", required=False, min_value=0, initial=0,
                                      widget=_number(step=ModelLimits.size_multiple, min="0"))
    outpaint_bottom = forms.IntegerField(label="Bottom", required=False, min_value=0, initial=0,
                                         widget=_number(step=ModelLimits.size_multiple, min="0"))

    # Hires fix (text to image): a second pass at a larger size.
    enable_hr = forms.BooleanField(label="Run a second pass at a larger size", required=False)
    hr_scale = forms.FloatField(label="Upscale by", required=False, min_value=1, max_value=MAX_HR_SCALE,
                                initial=request_default("hr_scale"), widget=_number(step="0.05", min="1"))
    hr_upscaler = forms.ChoiceField(label="Upscaler", required=False, choices=[(n, n) for n in HR_UPSCALERS],
                                    initial=request_default("hr_upscaler"))
    hr_second_pass_steps = forms.IntegerField(label="Hires steps", required=False, min_value=0,
                                              initial=request_default("hr_second_pass_steps"), widget=_number(),
                                              help_text="0: the same as Steps")
    hr_denoising_strength = forms.FloatField(label="Hires denoising", required=False, min_value=0, max_value=1,
                                             initial=request_default("hr_denoising_strength"),
                                             widget=_number(step="0.05", min="0", max="1"))
    hr_prompt = forms.CharField(label="Hires prompt", required=False, widget=forms.Textarea(attrs={"rows": 2}),
                                help_text="Empty: the prompt")
    hr_negative_prompt = forms.CharField(label="Hires negative prompt", required=False,
                                         widget=forms.Textarea(attrs={"rows": 2}),
                                         help_text="Empty: the negative prompt")

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = DiffusionModel.objects.filter(enabled=True)
        for name in ("width", "height", "steps", "guidance_scale", "autoguidance_scale", "seed", "num_images", "eta",
                     "clip_guidance_scale", "clip_guidance_every", "clip_cutouts"):
            # The engine's validator is the judge; browser-side limits only help.
            self.fields[name].widget.attrs.setdefault("inputmode", "decimal")

    @staticmethod
    def initial_for(model: DiffusionModel | None, remix: dict | None = None) -> dict:
        initial = {name: request_default(name) for name in ("num_images", "eta", "clip_guidance_every",
                                                              "clip_cutouts")}
        initial["clip_guidance_scale"] = CLIP_GUIDANCE_SCALE_WHEN_ON
        if model is not None:
            limits = model.limits()
            initial.update(model=model.slug, width=limits.default_width, height=limits.default_height,
                           steps=limits.default_steps, guidance_scale=limits.default_guidance_scale,
                           autoguidance_scale=limits.default_autoguidance_scale if limits.has_guide_unet else 0,
                           sampler=limits.default_sampler)
        initial.update({name: request_default(name) for name in (
            "mode", *MODE_FIELDS["outpaint"], "inpaint_full_res_padding", *HIRES_FIELDS)})
        if remix:
            initial.update({k: v for k, v in remix.items() if k in REQUEST_DEFAULTS})
            # The form's spelling of the request's (name, weight) pairs, which the validator reads back.
            initial["loras"] = ", ".join(f"{name}:{weight:g}" for name, weight in remix.get("loras") or ())
            initial["clip_guidance"] = bool(remix.get("clip_guidance_scale"))
            if not remix.get("clip_guidance_scale"):
                initial["clip_guidance_scale"] = CLIP_GUIDANCE_SCALE_WHEN_ON
        return initial

    def request_fields(self) -> dict:
        """The raw request for the validator: what was posted, with the CLIP switch applied."""
        data = self.data
        raw = {name: data.get(name, "") for name in
               ("prompt", "negative_prompt", "loras", "width", "height", "steps", "guidance_scale",
                "autoguidance_scale", "sampler", "seed", "num_images", "eta")}
        if data.get("clip_guidance") in FORM_TRUE:
            for name in ("clip_guidance_scale", "clip_guidance_every", "clip_cutouts"):
                raw[name] = data.get(name, "")
        else:
            raw["clip_guidance_scale"] = 0
        raw.update(self.mode_fields())
        return raw

    def mode_fields(self) -> dict:
        """The image-to-image and hires-fix fields of the chosen mode as posted; those of the other
        modes (still on the page, hidden, or shown to a browser without the script) come back
        empty -- absent for the validator -- so a value left in another mode's field never refuses
        a job. No mode posted: "" (the service infers it from the pictures). The pictures themselves
        (files, ``source_image``) are the view's to read."""
        data = self.data
        mode = data.get("mode") or ""
        raw = {name: "" for name in IMAGE_FORM_FIELDS}
        raw["mode"] = mode
        for name in MODE_FIELDS.get(mode, ()):
            raw[name] = data.get(name, "")
        for name in MODE_FLAGS.get(mode, ()):
            raw[name] = data.get(name) in FORM_TRUE
        if mode == "txt2img" and data.get("enable_hr") in FORM_TRUE:
            raw["enable_hr"] = True
            for name in HIRES_FIELDS:
                raw[name] = data.get(name, "")
        return raw
