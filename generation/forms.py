"""The generate form: renders the fields and carries errors next to them.

Validation itself is `generation.diffusion.validate_request` (via
`services.submit_generation`), the same function the API and CLI use.
"""

from django import forms

from generation.diffusion.request import GenerationRequest
from generation.diffusion.samplers import SAMPLERS
from generation.models import DiffusionModel


class GenerateForm(forms.Form):
    model = forms.ModelChoiceField(queryset=DiffusionModel.objects.none(), to_field_name="slug", empty_label=None)
    prompt = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "placeholder": "a large yellow circle in the center on a blue background"}))
    negative_prompt = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}))
    width = forms.IntegerField(min_value=8, step_size=8)
    height = forms.IntegerField(min_value=8, step_size=8)
    steps = forms.IntegerField(min_value=1, max_value=150)
    guidance_scale = forms.FloatField(label="Guidance scale (CFG)", min_value=0, max_value=30)
    autoguidance_scale = forms.FloatField(label="Autoguidance", required=False, min_value=0, max_value=10,
                                          help_text="Models with a guide UNet only; 0: off")
    sampler = forms.ChoiceField(choices=[(name, name) for name in SAMPLERS])
    seed = forms.IntegerField(required=False, help_text="Empty or -1: random (the seed used is recorded)")
    num_images = forms.IntegerField(label="Images", min_value=1, max_value=8, initial=1)
    eta = forms.FloatField(required=False, initial=0.0, help_text="DDIM only")
    clip_guidance = forms.BooleanField(label="CLIP guidance", required=False)
    clip_guidance_scale = forms.FloatField(label="CLIP guidance scale", required=False, initial=100)
    clip_guidance_every = forms.IntegerField(label="Guide every N steps", required=False, initial=4)
    clip_cutouts = forms.IntegerField(label="Cutouts", required=False, initial=4)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["model"].queryset = DiffusionModel.objects.filter(enabled=True)
        for name in ("width", "height", "steps", "guidance_scale", "autoguidance_scale", "seed", "num_images", "eta",
                     "clip_guidance_scale", "clip_guidance_every", "clip_cutouts"):
            # The engine's validator is the judge; browser-side limits only help.
            self.fields[name].widget.attrs.setdefault("inputmode", "decimal")

    @staticmethod
    def initial_for(model: DiffusionModel | None, remix: dict | None = None) -> dict:
        initial = {"num_images": 1, "eta": 0.0, "clip_guidance_scale": 100, "clip_guidance_every": 4,
                   "clip_cutouts": 4}
        if model is not None:
            initial.update(model=model.slug, width=model.default_width, height=model.default_height,
                           steps=model.default_steps, guidance_scale=model.default_guidance_scale,
                           autoguidance_scale=model.default_autoguidance_scale if model.has_guide_unet else 0,
                           sampler=model.default_sampler)
        if remix:
            initial.update({k: v for k, v in remix.items() if k in GenerationRequest.__dataclass_fields__})
            initial["clip_guidance"] = bool(remix.get("clip_guidance_scale"))
            if not remix.get("clip_guidance_scale"):
                initial["clip_guidance_scale"] = 100
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
