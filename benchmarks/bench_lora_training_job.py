"""What running a LoRA training as a job costs over the training core alone (issue 27, part 2).

    LDM_DATA_DIR=/tmp/bench-training .venv/bin/python benchmarks/bench_lora_training_job.py [--steps 200]
        [--rounds 2] [--threads 1] [--images 30]

On the built-in model, interleaved rounds of:

- core: ``train_lora`` on a folder of rendered plus signs (no samples, checkpoints every 50 steps);
- job: the same images as an album, run by ``training_runner.execute_training`` as a worker runs it:
  the dataset written from the album, checkpoints, the row updated and ``training.progress``
  published (at most ~5 a second), a sample grid (4 images of 8 steps) every tenth of the run, and
  the LoRA stored as a gallery ``Lora``.

Prints each run's wall time and the median job / core ratio. Not a test: it prints numbers.
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ldmsite.settings")
os.environ.setdefault("LDM_DATA_DIR", tempfile.mkdtemp(prefix="bench-training-"))

import django  # noqa: E402

django.setup()

import torch  # noqa: E402
from django.conf import settings  # noqa: E402
from django.contrib.auth import get_user_model  # noqa: E402
from django.core.files.base import ContentFile  # noqa: E402
from django.core.files.storage import default_storage  # noqa: E402
from django.core.management import call_command  # noqa: E402
from PIL import Image as PILImage  # noqa: E402

from benchmarks.machine import describe_machine  # noqa: E402
from gallery.models import Album, AlbumItem, Image, unguessable_name  # noqa: E402
from generation.diffusion import dataset  # noqa: E402
from generation.diffusion.training.lora import train_lora  # noqa: E402
from generation.models import DiffusionModel, LoraTraining  # noqa: E402
from generation.training_queue import claim_next_training  # noqa: E402
from generation.training_runner import execute_training, sample_every  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--images", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(describe_machine())
    print(f"torch threads {args.threads}, data dir {settings.DATA_DIR}")
    call_command("migrate", verbosity=0)
    model = DiffusionModel.default()
    owner, _ = get_user_model().objects.get_or_create(username="bench-trainer")
    album = Album.objects.create(owner=owner, title="Pluses")
    folder = Path(tempfile.mkdtemp(prefix="bench-plus-"))
    images, specs = dataset.generate(args.images, 0, {"shape": "plus"})
    for index, (picture, spec) in enumerate(zip(images, specs)):
        caption = dataset.caption(spec.attributes())
        buffer = io.BytesIO()
        PILImage.fromarray(picture).save(buffer, format="PNG")
        (folder / f"{index:05d}.png").write_bytes(buffer.getvalue())
        (folder / f"{index:05d}.txt").write_text(caption)
        image = Image.objects.create(owner=owner, file=default_storage.save(unguessable_name("png"),
                                                                           ContentFile(buffer.getvalue())),
                                     width=64, height=64, seed=index, prompt=caption)
        AlbumItem.objects.create(album=album, image=image, position=index)

    times: dict[str, list[float]] = {"core": [], "job": []}
    for round_ in range(args.rounds):
        started = time.perf_counter()
        train_lora(str(settings.LDM_BUILTIN_MODEL_DIR), folder, trigger="plsgn", output=folder / "core.safetensors",
                   steps=args.steps, checkpoint_dir=folder / f"ckpt-{round_}", resume=False)
        times["core"].append(time.perf_counter() - started)
        training = LoraTraining.objects.create(
            owner=owner, base_model=model, album=album, name=f"plsgn-{round_}-{time.time_ns()}", trigger="plsgn",
            rank=8, steps=args.steps, learning_rate=1e-3, batch_size=8, total_steps=args.steps,
            sample_every=sample_every(args.steps))
        started = time.perf_counter()
        execute_training(claim_next_training("bench"), "bench")
        times["job"].append(time.perf_counter() - started)
        training.refresh_from_db()
        assert training.status == "succeeded", training.error_detail
        print(f"round {round_ + 1}: core {times['core'][-1]:.1f} s, job {times['job'][-1]:.1f} s "
              f"({args.steps} steps, {training.image_count} images)")
    ratios = [job / core for job, core in zip(times["job"], times["core"])]
    print(f"median: core {statistics.median(times['core']):.1f} s, job {statistics.median(times['job']):.1f} s, "
          f"job/core {statistics.median(ratios):.2f}")


if __name__ == "__main__":
    main()
