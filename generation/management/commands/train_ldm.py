"""`manage.py train_ldm`: the project's training command (built-in model preset, or a user's data).

A thin wrapper: the training code lives Django-free in `generation.diffusion.training`
and is also runnable as `python -m generation.diffusion.training`.
"""

import argparse

from django.core.management.base import BaseCommand

from generation.diffusion.training.cli import build_parser, run


class Command(BaseCommand):
    help = ("Train the built-in latent diffusion model (tokenizer, CLIP, VAE, UNet) or fine-tune a Stable "
            "Diffusion pipeline's UNet on a folder of captioned images.")

    def add_arguments(self, parser):
        build_parser(parser)

    def handle(self, *args, **options):
        known = {action.dest for action in build_parser(argparse.ArgumentParser())._actions}
        run(argparse.Namespace(**{k: v for k, v in options.items() if k in known}))
