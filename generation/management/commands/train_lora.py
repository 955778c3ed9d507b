"""`manage.py train_lora`: train a LoRA on a folder of captioned images (PNG + same-named .txt).

    manage.py train_lora --images var/plus --trigger plsgn --out var/plsgn.safetensors
        [--model generation/builtin_model] [--rank 8] [--alpha 8] [--steps 2000] [--lr 1e-3]
        [--batch-size 8] [--seed 0] [--checkpoint-dir var/plsgn-ckpt] [--checkpoint-every 50]
        [--no-resume] [--log-every 10] [--threads N]

Prints one progress line every ``--log-every`` steps (step, loss, ETA). With ``--checkpoint-dir``
a killed run, started again with the same arguments, resumes from its newest checkpoint. The
training itself lives Django-free in `generation.diffusion.training.lora`.
"""

import time

from django.core.management.base import BaseCommand, CommandError

from generation.diffusion.training import lora as training


class Command(BaseCommand):
    help = "Train a LoRA (PEFT adapters on the UNet's attention layers) on a folder of captioned images."

    def add_arguments(self, parser):
        parser.add_argument("--images", required=True, help="folder of images with same-named .txt captions")
        parser.add_argument("--trigger", required=True, help="trigger word(s), put in every caption that lacks them")
        parser.add_argument("--out", required=True, help="the LoRA .safetensors file to write")
        parser.add_argument("--model", default=None, help="base model directory (default: the built-in model)")
        parser.add_argument("--rank", type=int, default=training.DEFAULT_RANK)
        parser.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default: the rank, scale 1)")
        parser.add_argument("--steps", type=int, default=training.DEFAULT_STEPS)
        parser.add_argument("--lr", type=float, default=training.DEFAULT_LEARNING_RATE)
        parser.add_argument("--batch-size", type=int, default=training.DEFAULT_BATCH_SIZE)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--checkpoint-dir", default=None)
        parser.add_argument("--checkpoint-every", type=int, default=training.DEFAULT_CHECKPOINT_EVERY)
        parser.add_argument("--no-resume", action="store_true", help="start over even if --checkpoint-dir has a checkpoint")
        parser.add_argument("--log-every", type=int, default=10)
        parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")

    def handle(self, *args, **options):
        model = options["model"]
        if not model:
            from django.conf import settings

            model = settings.LDM_BUILTIN_MODEL_DIR
        if options["threads"]:
            import torch

            torch.set_num_threads(options["threads"])
        log_every = max(1, options["log_every"])
        t0 = time.time()

        def progress(step, total, loss, eta, samples):
            if step % log_every == 0 or step == total:
                self.stdout.write(f"step {step}/{total} loss {loss:.4f} elapsed {time.time() - t0:.0f}s ETA {eta:.0f}s")
                self.stdout.flush()

        try:
            result = training.train_lora(
                str(model), options["images"], trigger=options["trigger"], output=options["out"],
                rank=options["rank"], alpha=options["alpha"], steps=options["steps"], learning_rate=options["lr"],
                batch_size=options["batch_size"], seed=options["seed"], checkpoint_dir=options["checkpoint_dir"],
                checkpoint_every=options["checkpoint_every"], resume=not options["no_resume"], on_progress=progress,
            )
        except (ValueError, FileNotFoundError) as error:
            raise CommandError(str(error)) from error
        if result.truncated_captions:
            self.stdout.write(f"note: {result.truncated_captions} captions are longer than the model's text encoder "
                              "reads; their ends were cut off (a shorter trigger word keeps more of them)")
        if result.start_step:
            self.stdout.write(f"resumed from step {result.start_step}")
        self.stdout.write(f"wrote {result.path} ({result.steps} steps, {result.seconds:.1f}s)")
