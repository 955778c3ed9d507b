"""Where workers run, how they name themselves, and the recovery loop."""

import atexit
import logging
import os
import socket
import threading

import dramatiq
from dramatiq.middleware import Middleware

logger = logging.getLogger(__name__)


def worker_identity() -> str:
    """host:pid/thread — unique among live workers, readable in the admin."""
    return f"{socket.gethostname()}:{os.getpid()}/{threading.current_thread().name}"


def start_embedded_worker(threads: int) -> dramatiq.Worker:
    """Consume the in-process broker with `threads` worker threads (embedded mode).

    In scale-out mode workers are separate `manage.py rundramatiq` processes and
    this is not called (settings set the thread count to 0).
    """
    worker = dramatiq.Worker(dramatiq.get_broker(), worker_threads=threads, worker_timeout=200)
    worker.start()
    atexit.register(worker.stop, timeout=5_000)
    logger.info("Started %d embedded worker thread(s).", threads)
    return worker


def start_recovery_loop(interval: float) -> threading.Thread:
    """Recover lost and stuck jobs now and then every `interval` seconds (web process)."""
    from django.db import close_old_connections

    from generation.services import recover_jobs

    def loop():
        first = True
        stop = threading.Event()
        while True:
            try:
                report = recover_jobs(on_startup=first)
                if report.renudged or report.retried or report.failed:
                    logger.info("Job recovery: %s", report)
                first = False
            except Exception:
                logger.exception("Job recovery failed; trying again later")
            finally:
                close_old_connections()
            stop.wait(interval)

    thread = threading.Thread(target=loop, name="job-recovery", daemon=True)
    thread.start()
    return thread


# Jobs running in this process, by thread, for the worker status page.
RUNNING_JOBS: dict[str, int] = {}


def process_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class WorkerStatusMiddleware(Middleware):
    """Keeps a `WorkerStatus` row per worker process fresh while it runs (staff workers page)."""

    def __init__(self):
        self._stop = threading.Event()

    def after_worker_boot(self, broker, worker):
        from django.conf import settings

        self._stop.clear()
        queues = sorted(worker.consumer_whitelist or broker.get_declared_queues())
        thread = threading.Thread(target=self._report, args=(queues, settings.LDM_HEARTBEAT_SECONDS),
                                  name="worker-status", daemon=True)
        thread.start()

    def before_worker_shutdown(self, broker, worker):
        from django.db import close_old_connections

        from generation.models import WorkerStatus

        self._stop.set()
        try:
            WorkerStatus.objects.filter(identity=process_identity()).delete()
        except Exception:
            logger.warning("Could not remove this worker's status row", exc_info=True)
        finally:
            close_old_connections()

    def _report(self, queues, interval):
        from django.db import close_old_connections
        from django.utils import timezone

        from generation.models import WorkerStatus
        from generation.runner import model_cache

        started = timezone.now()
        while not self._stop.is_set():
            try:
                WorkerStatus.objects.update_or_create(identity=process_identity(), defaults={
                    "queues": [q for q in queues if not q.endswith(".DQ")], "resident_models": model_cache().sources(),
                    "current_jobs": sorted(RUNNING_JOBS.values()), "heartbeat_at": timezone.now(),
                    "started_at": started})
            except Exception:
                logger.warning("Could not record worker status", exc_info=True)
            finally:
                close_old_connections()
            self._stop.wait(interval)
