"""Where workers run and how they name themselves."""

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
