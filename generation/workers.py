"""Where workers run, how they name themselves, and the recovery loop."""

import atexit
import logging
import os
import socket
import threading

import dramatiq

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
