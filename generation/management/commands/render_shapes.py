"""`manage.py render_shapes`: captioned images of the procedural shapes (by default the plus
sign the built-in model never saw) into a folder of PNG + same-named .txt captions, for a LoRA's
training album.

    manage.py render_shapes var/plus --count 30 [--shape plus] [--seed 0] [--size large]
        [--color red] [--background white] [--position "in the center"] [--prefix "plsgn, "]
        [--sheet var/plus_sheet.png]

The drawing lives Django-free in `generation.diffusion.dataset` (`write_captioned_folder`).
"""

from pathlib import Path

import numpy as np
from django.core.management.base import BaseCommand, CommandError

from generation.diffusion import dataset


class Command(BaseCommand):
    help = ("Render captioned images of one procedural shape (default: plus, the shape the built-in model "
            "never saw) into a folder of PNG + .txt captions.")

    def add_arguments(self, parser):
        parser.add_argument("folder", help="where to write NAME.png + NAME.txt (created if missing)")
        parser.add_argument("--count", type=int, default=30)
        parser.add_argument("--shape", default="plus", choices=[*dataset.ALL_SHAPES, "any"],
                            help="the shape drawn; 'any': the training shapes at random (default: plus)")
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--size", choices=list(dataset.SIZES))
        parser.add_argument("--color", choices=list(dataset.COLORS))
        parser.add_argument("--background", choices=list(dataset.COLORS))
        parser.add_argument("--position", choices=list(dataset.POSITIONS))
        parser.add_argument("--prefix", default="", help="text put before every caption (a trigger word)")
        parser.add_argument("--sheet", default=None, help="also write a contact sheet of the images to this PNG path")

    def handle(self, *args, **options):
        if options["count"] < 1:
            raise CommandError("--count must be at least 1")
        attributes = {name: options[name] for name in ("size", "color", "background", "position") if options[name]}
        if options["shape"] != "any":
            attributes["shape"] = options["shape"]
        if attributes.get("color") and attributes.get("color") == attributes.get("background"):
            raise CommandError("--color and --background must differ")
        paths = dataset.write_captioned_folder(options["folder"], options["count"], options["seed"], attributes,
                                               prefix=options["prefix"])
        if options["sheet"]:
            from PIL import Image

            sheet = dataset.contact_sheet([np.asarray(Image.open(p).convert("RGB")) for p in paths], scale=2)
            Path(options["sheet"]).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(sheet).save(options["sheet"])
        self.stdout.write(f"wrote {len(paths)} captioned images to {options['folder']}")
