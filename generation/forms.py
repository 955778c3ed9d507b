"""The generate form: renders the fields and carries errors next to them.

Validation itself is `generation.diffusion.validate_request` (via
`services.submit_generation`), the same function the API and CLI use; the bounds and defaults
the form shows come from the same module (the browser's checks only help).
"""

from django import forms

from generation.admission import Refusal
from generation.diffusion.request import (MAX_AUTOGUIDANCE_SCALE, MAX_CLIP_CUTOUTS, MAX_CLIP_GUIDANCE_EVERY,
                                          MAX_CLIP_GUIDANCE_SCALE, MAX_GUIDANCE_SCALE, GenerationRequest,
                                          ModelLimits)
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


class GenerateForm(forms.Form):
    model = forms.ModelChoiceField(queryset=DiffusionModel.objects.none(), to_field_name="slug", empty_label=None)
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "placeholder": "a large yellow circle in the center on a blue background"}))
    negative_prompt = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
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
        if remix:
            initial.update({k: v for k, v in remix.items() if k in REQUEST_DEFAULTS})
            initial["clip_guidance"] = bool(remix.get("clip_guidance_scale"))
            if not remix.get("clip_guidance_scale"):
                initial["clip_guidance_scale"] = CLIP_GUIDANCE_SCALE_WHEN_ON
        return initial

    def request_fields(self) -> dict:
        """The raw request for the validator: what was posted, with the CLIP switch applied."""
        data = self.data
        raw = {name: data.get(name, "") for name in
               ("prompt", "negative_prompt", "width", "height", "steps", "guidance_scale", "autoguidance_scale",
                "sampler", "seed", "num_images", "eta")}
        if data.get("clip_guidance") in ("on", "true", "1"):
            for name in ("clip_guidance_scale", "clip_guidance_every", "clip_cutouts"):
                raw[name] = data.get(name, "")
        else:
            raw["clip_guidance_scale"] = 0
        return raw
