"""Dramatiq actors, and `nudge`, which sends their messages. Actors take ids, never objects,
and set explicit limits.

Retries are the database's business (see `recovery.recover_jobs`), so actors themselves never
retry: a failure is recorded on the job row.
"""

import dramatiq
from django.conf import settings
from django.utils import timezone

from generation.models import DiffusionModel, Generation, LoraTraining, WorkerProbe
from generation.queue import announce_positions, claim_compatible_jobs, claim_next_job
from generation.runner import execute_generation, execute_generation_batch
from generation.training_queue import claim_next_training
from generation.training_runner import execute_training
from generation.workers import TRAINING_QUEUE, worker_identity


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=10_000)
def answer_worker_probe(probe_id: int) -> None:
    WorkerProbe.objects.filter(pk=probe_id, answered_at__isnull=True).update(
        answered_at=timezone.now(), answered_by=worker_identity()
    )


@dramatiq.actor(queue_name="default", max_retries=0, time_limit=settings.LDM_JOB_TIME_LIMIT_SECONDS * 1000)
def run_generation(job_id: int) -> None:
    """A nudge: some job of this job's model is waiting. Run the fairest one.

    The message names a job, but the worker claims whichever queued job of that
    model is next in the fair order; one message still means one job run, and a
    duplicate message finds nothing left to claim.

    With `LDM_MAX_BATCH` above 1 the worker also claims up to that many compatible
    queued jobs, next in the fair order (waiting `LDM_BATCH_WINDOW_MS` at most), and
    runs them as one batch; their own messages then find nothing left to claim.
    """
    model_id = Generation.objects.filter(pk=job_id).values_list("model_id", flat=True).first()
    if model_id is None:
        return
    worker = worker_identity()
    job = claim_next_job(worker, model_id=model_id)
    if job is None:
        return
    companions = claim_compatible_jobs(worker, job, settings.LDM_MAX_BATCH - 1, settings.LDM_BATCH_WINDOW_MS / 1000)
    announce_positions(model_id)
    if companions:
        execute_generation_batch([job, *companions], worker)
    else:
        execute_generation(job, worker)


def nudge(job: Generation) -> None:
    """Send a queue message for the job, on its model's queue."""
    Generation.objects.filter(pk=job.pk).update(nudged_at=timezone.now())
    queue = DiffusionModel.objects.values_list("queue_name", flat=True).get(pk=job.model_id) or "default"
    broker = dramatiq.get_broker()
    broker.declare_queue(queue)
    broker.enqueue(run_generation.message(job.pk).copy(queue_name=queue))


# LoRA trainings have a queue of their own (`workers.TRAINING_QUEUE`), so hosts can be set aside for
# them (`rundramatiq --queues training`); a worker started without --queues consumes every declared
# queue, and the server in embedded mode gives trainings a worker thread of their own.


@dramatiq.actor(queue_name=TRAINING_QUEUE, max_retries=0, time_limit=settings.LDM_JOB_TIME_LIMIT_SECONDS * 1000)
def run_lora_training(training_id: int) -> None:
    """A nudge: some LoRA training is waiting. Claim the fairest queued one and run it (a duplicate
    message finds nothing left to claim)."""
    worker = worker_identity()
    training = claim_next_training(worker)
    if training is not None:
        execute_training(training, worker)


def nudge_training(training: LoraTraining) -> None:
    """Send a queue message for a LoRA training."""
    LoraTraining.objects.filter(pk=training.pk).update(nudged_at=timezone.now())
    run_lora_training.send(training.pk)


# Declare the model queues so workers consume them (`rundramatiq --queues` picks a subset).
for _queue in settings.LDM_JOB_QUEUES:
    dramatiq.get_broker().declare_queue(_queue)
