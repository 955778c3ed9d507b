"""Where workers run and what each keeps: its name, its resident models, its status row.

In embedded mode workers are threads of the server process (`start_embedded_worker`); in
scale-out mode they are `manage.py rundramatiq` processes. Either way each process keeps one
model cache, so a model is loaded once per worker, not once per job.
"""

import atexit
import logging
import os
import socket
import threading
from pathlib import Path

import dramatiq
from django.conf import settings
from django.db import close_old_connections
from django.utils import timezone
from dramatiq.common import q_name
from dramatiq.middleware import Middleware

from generation import diffusion  # the ML core loads torch on first use of a model class (PEP 562)

logger = logging.getLogger(__name__)

# Jobs running in this process, by thread, for the worker status page.
RUNNING_JOBS: dict[str, int] = {}

_cache = None
_cache_lock = threading.Lock()


def worker_identity() -> str:
    """host:pid/thread — unique among live workers, readable in the admin."""
    return f"{socket.gethostname()}:{os.getpid()}/{threading.current_thread().name}"


def process_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


TRAINING_QUEUE = "training"  # LoRA trainings: minutes long, so never in the way of generation jobs


class WorkerForQueuesExcept(dramatiq.Worker):
    """A worker for every queue declared, now or later, except ``excluded``: dramatiq's own
    ``queues`` whitelist is fixed at start, and a model's queue may be declared later (`tasks.nudge`)."""

    def __init__(self, broker, *, excluded: set[str], **options):
        self.excluded = set(excluded)
        super().__init__(broker, **options)

    def _add_consumer(self, queue_name: str, *, delay: bool = False) -> None:
        if q_name(queue_name) not in self.excluded:
            super()._add_consumer(queue_name, delay=delay)


class EmbeddedWorkers:
    """The worker threads of the server process (embedded mode): `threads` for generation jobs and
    one of its own for LoRA trainings, so a training of several minutes never holds up the jobs of
    the generate page (on 2 cores both then run, each on one torch thread: `apply_torch_threads`)."""

    def __init__(self, threads: int):
        broker = dramatiq.get_broker()
        self.workers = [
            WorkerForQueuesExcept(broker, excluded={TRAINING_QUEUE}, worker_threads=threads, worker_timeout=200),
            dramatiq.Worker(broker, queues={TRAINING_QUEUE}, worker_threads=1, worker_timeout=200),
        ]

    def start(self) -> None:
        for worker in self.workers:
            worker.start()

    def stop(self, timeout: int) -> None:
        for worker in self.workers:
            worker.stop(timeout=timeout)


def start_embedded_worker(threads: int) -> EmbeddedWorkers:
    """Consume the in-process broker with `threads` worker threads, plus one for LoRA trainings
    (embedded mode).

    In scale-out mode workers are separate `manage.py rundramatiq` processes and
    this is not called (settings set the thread count to 0).
    """
    workers = EmbeddedWorkers(threads)
    workers.start()
    atexit.register(stop_embedded_worker, workers)
    logger.info("Started %d embedded worker thread(s) and one for LoRA trainings.", threads)
    return workers


def stop_embedded_worker(workers: EmbeddedWorkers, timeout_ms: int = 5_000) -> None:
    """Stop the worker threads (at exit, or earlier), once: stopping again at exit would write to a
    database that may be gone by then."""
    atexit.unregister(stop_embedded_worker)  # the only embedded workers of this process
    workers.stop(timeout=timeout_ms)


# --- The resident model cache ---------------------------------------------------------------------

def model_cache():
    """This process's resident models: each is loaded once and kept (LRU under a memory budget)."""
    global _cache
    with _cache_lock:
        if _cache is None:
            _cache = diffusion.ModelCache(max_bytes=settings.LDM_MODEL_CACHE_BYTES)
        return _cache


def resolve_source(source: str) -> str:
    """Relative model paths (the built-in model) are relative to the repository."""
    path = Path(source)
    if not path.is_absolute() and (settings.BASE_DIR / path).exists():
        return str(settings.BASE_DIR / path)
    return source


def torch_threads() -> int | None:
    """The intra-op threads torch should use here (`LDM_TORCH_THREADS`), or None for torch's default.

    Why `auto` leaves a core in embedded mode: the server's event loop, the database and the channel
    layer share the process with the sampling thread, and OpenMP threads that find a core busy spin
    instead of sleeping. Measured on 2 cores with other work on them: the built-in model's default job
    took 0.53-0.59 s with one torch thread in every run, with two 0.51 s when the cores were free and
    31-34 s when they were not (docs/PERFORMANCE.md)."""
    if settings.LDM_TORCH_THREADS:
        return settings.LDM_TORCH_THREADS
    if settings.EMBEDDED_WORKER_THREADS:
        return max(1, len(os.sched_getaffinity(0)) - 1)
    return None


_threads_applied = threading.Lock()
_threads_done = False


def apply_torch_threads() -> None:
    """Set torch's intra-op threads once per process, before the first model runs."""
    global _threads_done
    with _threads_applied:
        if _threads_done:
            return
        threads = torch_threads()
        if threads is not None:
            import torch  # the web process imports torch only once it runs a job

            torch.set_num_threads(threads)
            logger.info("torch uses %d intra-op thread(s) (LDM_TORCH_THREADS)", threads)
        _threads_done = True


def _cache_arguments(model) -> tuple[str, dict]:
    """How a registered `DiffusionModel` is asked of the cache: its source and load options."""
    return resolve_source(model.source), dict(dtype=settings.LDM_PRECISION, clip_source=model.clip_source or None,
                                              precision_cache=precision_cache_file(), fast_path=settings.LDM_FAST_PATH)


def is_resident(model) -> bool:
    """Whether this process already holds the registered `DiffusionModel` as `load_for_job` would
    ask for it (its next job loads nothing)."""
    source, options = _cache_arguments(model)
    return model_cache().holds(source, **options)


def load_for_job(model):
    """The loaded pipeline of a registered `DiffusionModel`, from this process's cache."""
    apply_torch_threads()
    source, options = _cache_arguments(model)
    return model_cache().get(source, **options)


def precision_cache_file():
    """Where `LDM_PRECISION=auto` remembers which precision it measured fastest, per model and device."""
    return settings.DATA_DIR / "cache" / "precision.json"


# --- The status row of a worker process ------------------------------------------------------------

def resident_models() -> list[dict]:
    """What the staff workers page shows of each resident model: its source and the precision it
    runs in, with the timings that chose it (`LDM_PRECISION=auto`)."""
    return [{"source": model.source, "dtype": model.precision.dtype_name, "device": str(model.device),
             "reason": model.precision.reason,
             "timings_ms": {dtype: round(seconds * 1000, 2) for dtype, seconds in model.precision.measured.items()}}
            for model in model_cache().models()]


class WorkerStatusMiddleware(Middleware):
    """Keeps a `WorkerStatus` row per worker process fresh while it runs (staff workers page).

    django_dramatiq loads broker middleware while Django is still loading apps, before models
    can be imported; so this class imports the model only once a worker boots.
    """

    JOIN_SECONDS = 10

    def __init__(self):
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._workers: list = []  # one status row per process, also when it runs two workers (embedded mode)
        self._workers_lock = threading.Lock()

    def after_worker_boot(self, broker, worker):
        with self._workers_lock:
            self._workers.append(worker)
            if len(self._workers) > 1:
                return  # the first worker's thread reports for every worker of the process
        # A fresh event per boot: a thread of an earlier boot that outlived its join stays stopped.
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._report,
                                        args=(broker, settings.LDM_HEARTBEAT_SECONDS, self._stop),
                                        name="worker-status", daemon=True)
        self._thread.start()

    def before_worker_shutdown(self, broker, worker):
        from generation.models import WorkerStatus  # see the class docstring

        with self._workers_lock:
            if worker in self._workers:
                self._workers.remove(worker)
            if self._workers:
                return  # another worker of this process still runs
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.JOIN_SECONDS)
            if self._thread.is_alive():
                logger.warning("The worker status thread did not stop within %ss", self.JOIN_SECONDS)
        try:
            WorkerStatus.objects.filter(identity=process_identity()).delete()
        except Exception:
            logger.warning("Could not remove this worker's status row", exc_info=True)
        finally:
            close_old_connections()

    def _report(self, broker, interval, stop: threading.Event):
        from generation.models import WorkerStatus  # see the class docstring

        started = timezone.now()
        while not stop.is_set():
            # Read each time: a model's queue may be declared after the worker booted.
            with self._workers_lock:
                queues = sorted({name for worker in self._workers for name in list(worker.consumers)})
            try:
                WorkerStatus.objects.update_or_create(identity=process_identity(), defaults={
                    "queues": [q for q in queues if not q.endswith(".DQ")], "resident_models": resident_models(),
                    "current_jobs": sorted(RUNNING_JOBS.values()), "heartbeat_at": timezone.now(),
                    "started_at": started})
            except Exception:
                logger.warning("Could not record worker status", exc_info=True)
            finally:
                close_old_connections()
            stop.wait(interval)
