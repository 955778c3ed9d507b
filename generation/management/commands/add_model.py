from django.core.management.base import BaseCommand, CommandError

from generation.diffusion import ModelLoadError
from generation.registry import add_model


class Command(BaseCommand):
    help = ("Register a diffusers text-to-image model (local directory or hub id) after checking that it loads. "
            "Its defaults (sampler, guidance, autoguidance, steps, size) come from the model directory's "
            "ldmsite_defaults.json when it has one; staff can change them in the admin afterwards.")

    def add_arguments(self, parser):
        parser.add_argument("source", help="diffusers pipeline directory, or hub repository id")
        parser.add_argument("--name", help="display name (default: from the source)")
        parser.add_argument("--slug", help="URL name (default: from the name)")
        parser.add_argument("--clip-source", default="", help="CLIP model for guidance and scores")
        parser.add_argument("--default", action="store_true", help="make it the default model")

    def handle(self, *args, source, name, slug, clip_source, default, **options):
        try:
            model = add_model(source, name=name, slug=slug, clip_source=clip_source, make_default=default)
        except ModelLoadError as error:
            raise CommandError(str(error)) from None
        self.stdout.write(f"Registered {model.name} as '{model.slug}' ({model.get_family_display()}, "
                          f"up to {model.max_width}x{model.max_height}, CLIP: {'yes' if model.has_clip else 'no'}).")
        autoguidance = (f", autoguidance {model.default_autoguidance_scale:g}"
                        if model.has_guide_unet and model.default_autoguidance_scale > 0 else "")
        self.stdout.write(f"Defaults: {model.default_sampler}, guidance {model.default_guidance_scale:g}"
                          f"{autoguidance}, {model.default_steps} steps, {model.default_width}x{model.default_height}.")
