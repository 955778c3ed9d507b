"""A running job's live progress, published off the sampling thread (issue 28).

The engine calls back after every denoising step on the thread that samples. Whatever that
callback does is added to the job's time: before this module it wrote the job's row, encoded a
WebP preview and waited for the channel layer (in embedded mode, for the server's event loop to
run the send) -- a few milliseconds a step that the engine alone does not spend, on a model whose
steps take ~20 ms. So the callback only records the latest step (`JobProgress.update`, no I/O, no
lock held for long) and a publisher thread (kept for the process: `publishers`) publishes: at most
one row update and one channel-layer send every `PUBLISH_INTERVAL_SECONDS`, the steps in between
coalesced (a client wants the newest image, not every one). The sampling thread says which step
is due and makes that step's small preview image itself (torch work is cheaper there than GIL
hand-overs); the publisher encodes it and does the I/O.

What stays true: the row holds the durable state (step, total, the live ETA, the latest preview,
a fresh heartbeat) exactly as before; progress events keep their order (one thread sends them,
each reserving its `seq` when sent); the latest step is always delivered, and delivered before
the job's final event, because the runner closes the publisher (`close` flushes and joins) before
it finishes the job.

Interface for the runner (and for batch execution, one object per job of a batch)::

    progress = JobProgress(job, load_seconds)      # starts the job's publishing loop on a kept thread
    progress.update(step_progress)                 # sampling thread, every step: returns at once
    progress.close()                               # publishes the last step left, joins

It is also a context manager (``with JobProgress(job, load_seconds) as progress:``).
"""

from __future__ import annotations

import base64
import collections
import concurrent.futures
import io
import logging
import threading
import time

from django.db import connections
from django.db.models import F
from django.utils import timezone
from PIL import Image

from generation import events
from generation.models import Generation

logger = logging.getLogger(__name__)

# At most ~5 progress events (and previews) a second per job; a step slower than this is each sent.
# 0.1 s cost the built-in model's default job 2% more through the site than 0.2 s (two A/B runs,
# docs/PERFORMANCE.md); A1111 refreshes its live preview once a second by default.
PUBLISH_INTERVAL_SECONDS = 0.2
PREVIEW_SIZE = 256  # the longest side of a preview; only latents larger than this are shrunk
LOSSLESS_PREVIEW_PIXELS = 64 * 64  # up to SD1.5's 512 px images' latents, previews are PNGs
ETA_SMOOTHING = 0.25  # weight of the newest step time in the moving average of step times
CLOSE_TIMEOUT_SECONDS = 30  # a send may wait up to 5 s for the event loop (events._deliver)
CANCEL_READ_SECONDS = 0.25  # the sampling thread reads the cancel flag itself when the last read is older


class StepTimer:
    """A smoothed estimate of the time left: an exponential moving average of step times.

    The engine's own estimate (elapsed / steps done) counts the first step's warm-up in every later
    estimate and follows each slow or fast step, so it jumps; this one starts from the first step's
    time (replaced by the second step's, when shorter: the first holds the warm-up) and moves by a
    quarter of each new step's difference. The model's load time is never in it
    (the runner starts the timer after loading)."""

    def __init__(self, started: float):
        self.last_time, self.last_step = started, 0
        self.first_step: int | None = None
        self.average: float | None = None

    def observe(self, step: int, total: int, now: float) -> float:
        steps = step - self.last_step
        if steps > 0:
            each = (now - self.last_time) / steps
            if self.average is None or self.last_step == self.first_step:
                # The first interval also holds the run's preparation (prompt encoding, warm-up):
                # it is only a first guess, replaced by the first plain step's time.
                self.average = each if self.average is None else min(self.average, each)
            else:
                self.average += ETA_SMOOTHING * (each - self.average)
            if self.first_step is None:
                self.first_step = step
            self.last_time, self.last_step = now, step
        return max(0.0, (self.average or 0.0) * (total - step))


def preview_data_url(picture, size: int = PREVIEW_SIZE) -> str:
    """The preview as a data URL at the engine's latent resolution (1/8 of the image for the SD
    VAEs, 1/4 for the built-in model's), shrunk only when its longer side is over `size`.

    It is not enlarged here: the page draws it in its box with smooth scaling (`generate.css`),
    which in Chromium looks the same as the bicubic x8 enlargement this used to send; that
    enlargement and its WebP encode took 0.71 ms in a tight loop against 0.03 ms for the
    latent-size PNG, and more between steps in the server, holding the GIL (docs/PERFORMANCE.md). Up to `LOSSLESS_PREVIEW_PIXELS`
    it is a PNG: lossy WebP halves the colour resolution, visible as smeared colour on a 16 px
    preview, and a PNG that small is about as many bytes; larger previews (SDXL's 128 px latents)
    are lossy WebP, whose size grows far slower."""
    picture = picture.convert("RGB")
    if max(picture.size) > size:
        picture.thumbnail((size, size), Image.BICUBIC)
    buffer = io.BytesIO()
    if picture.width * picture.height <= LOSSLESS_PREVIEW_PIXELS:
        picture.save(buffer, format="PNG")
        kind = "png"
    else:
        # method=0: libwebp's fastest effort (1.05 ms instead of 2-4 ms for 256 px, 14% more bytes).
        picture.save(buffer, format="WEBP", quality=70, method=0)
        kind = "webp"
    return f"data:image/{kind};base64," + base64.b64encode(buffer.getvalue()).decode()


# A bound, not a size: a thread is made only when every other one is busy, so a process keeps one
# per job it runs at once (worker threads x LDM_MAX_BATCH at most); a job beyond the bound would
# publish only once a thread is free.
PUBLISHER_THREADS = 256

_publishers: concurrent.futures.ThreadPoolExecutor | None = None
_publishers_lock = threading.Lock()


def publishers() -> concurrent.futures.ThreadPoolExecutor:
    """The threads that publish jobs' progress, kept for the life of the process: a new thread per
    job also opened a new database connection per job (~1 ms of the GIL for SQLite, a network
    round trip for PostgreSQL) while the job's first steps ran. Measured through the site, the
    built-in model's default job: 4 ms less wall time outside the engine (docs/PERFORMANCE.md).
    A pool thread is made only when every other one is busy."""
    global _publishers
    with _publishers_lock:
        if _publishers is None:
            _publishers = concurrent.futures.ThreadPoolExecutor(PUBLISHER_THREADS, thread_name_prefix="progress")
        return _publishers


def close_unusable_connections() -> None:
    """A kept thread keeps its database connection between jobs; one the database dropped (a restart,
    an error) is closed here so the next query opens a fresh one."""
    for connection in connections.all(initialized_only=True):
        if connection.connection is not None and (connection.errors_occurred or not connection.is_usable()):
            connection.close()


class JobProgress:
    """The live progress of one running job: `update` on the sampling thread, publishing on its own.

    ``interval``: the least time between two publications (default `PUBLISH_INTERVAL_SECONDS`);
    the first step and the last (step == total) go out at once. ``interval=0`` publishes every
    step and makes `update` wait until its step is published -- the sampler in lockstep with the
    publisher, as it was before this module; for tests that act on each step's event (cancel
    at step 2), never the default.
    """

    def __init__(self, job: Generation, load_seconds: float, *, interval: float | None = None):
        self.job, self.load_seconds = job, load_seconds
        self.interval = PUBLISH_INTERVAL_SECONDS if interval is None else interval
        self.timer = StepTimer(time.monotonic())
        self._changed = threading.Condition()
        self._latest = None  # (StepProgress, eta): the newest step handed over
        self._handed = self._published = 0  # updates handed over / published or dropped (for lockstep)
        self._closing = False
        self._sent_any = False
        self._not_before = 0.0  # monotonic time before which a step is not due for publishing (coalescing)
        self._due = collections.deque()  # (StepProgress, eta, handed) due for publishing, oldest first
        self._taken_step = 0  # the step of the last publication taken
        self._cancel_requested, self._cancel_read_at = False, float("-inf")
        self._done = publishers().submit(self._publish_loop)

    # --- the sampling thread ---

    def update(self, progress) -> None:
        """Record the step the engine reached (a `StepProgress`); returns without waiting (but
        see ``interval=0``).

        This thread decides which steps are published -- the first, the last, and the first one
        reached after the interval -- and makes the preview of those here: the preview's torch ops
        on the publishing thread each gave the GIL up and took it back, and every such hand-over
        stalls the sampler (measured in the server: ~14 context switches of the sampling thread per
        publication, against 0.1 ms of work here). The publisher sleeps until a step is due: no
        wake-up, so no GIL hand-over, for the steps in between (docs/PERFORMANCE.md)."""
        eta = self.timer.observe(progress.step, progress.total, time.monotonic())
        # Due: the last step, every step in lockstep, else the first step reached once the interval
        # has passed -- unless one is still waiting to go out (a publisher behind takes that one,
        # with its preview made here, and the newest step is left for the next turn or `close`).
        due = (self.interval <= 0 or progress.step >= progress.total
               or (not self._due and time.monotonic() >= self._not_before))
        if due:
            progress.preview  # made now, on this thread (see above); the publisher encodes it
        with self._changed:
            self._latest = (progress, eta)
            self._handed += 1
            handed = self._handed
            if due:
                self._due.append((progress, eta, handed))
                self._changed.notify_all()
            if self.interval <= 0:
                while self._published < handed and not self._done.done():
                    self._changed.wait(1.0)

    def should_cancel(self) -> bool:
        """The engine's cancel check, asked after every step. A query per step was 2% of the
        built-in model's job time in the server (py-spy), so the publishing thread reads the flag
        with each publication and the sampling thread reads it itself only when that read is older
        than `CANCEL_READ_SECONDS` (slow steps, or nothing published yet): a cancel is seen within
        a step or a quarter second. In lockstep (``interval=0``) every check reads the row, so a
        cancel asked after step k's event stops the job at step k + 1 exactly, as before."""
        if self.interval > 0 and time.monotonic() - self._cancel_read_at < CANCEL_READ_SECONDS:
            return self._cancel_requested
        return self._read_cancel()

    def _read_cancel(self) -> bool:
        read_at = time.monotonic()
        return self._remember_cancel(Generation.objects.filter(pk=self.job.pk, cancel_requested=True).exists(),
                                     read_at)

    def _remember_cancel(self, requested: bool, read_at: float) -> bool:
        """The flag as read at `read_at` (by either thread): what `should_cancel` answers until it is stale."""
        self._cancel_requested, self._cancel_read_at = requested, read_at
        return requested

    def close(self) -> None:
        """Publish the latest step if it is not yet out, then stop the thread (idempotent). Call it
        before the job's final event and final row update, so they come after every progress."""
        with self._changed:
            self._closing = True
            self._changed.notify_all()
        try:
            self._done.result(CLOSE_TIMEOUT_SECONDS)
        except concurrent.futures.TimeoutError:
            logger.warning("Job %s: progress publishing did not finish within %s s", self.job.pk,
                           CLOSE_TIMEOUT_SECONDS)

    def __enter__(self) -> "JobProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- the publishing thread ---

    def _next(self):
        """Wait for a due step (see `update`) and take it; once closing, the latest step if it is
        newer than what went out (a run stopped between publications). None: nothing left."""
        with self._changed:
            while not (self._due or self._closing):
                self._changed.wait()
            if self._due:
                progress, eta, handed = self._due.popleft()
                # From when a publication starts: the sampling thread reads it to tell the next due step.
                self._not_before = time.monotonic() + self.interval
            elif self._latest is not None and self._latest[0].step > self._taken_step:
                (progress, eta), handed = self._latest, self._handed
            else:
                return None
            self._taken_step = progress.step
            return (progress, eta), handed

    def _publish_loop(self) -> None:
        close_unusable_connections()  # this thread's connection outlives a job (`publishers`)
        try:
            while (taken := self._next()) is not None:
                (progress, eta), handed = taken
                try:
                    self._publish(progress, eta)
                except Exception:  # best-effort, like every event: the next step tries again
                    logger.warning("Job %s: could not publish step %s", self.job.pk, progress.step, exc_info=True)
                    close_unusable_connections()  # on a fresh connection, if the database dropped this one
                with self._changed:
                    self._published = handed
                    self._changed.notify_all()
        finally:
            with self._changed:
                self._published = self._handed
                self._changed.notify_all()

    def _publish(self, progress, eta: float) -> None:
        """The row update and the event of one step: what the sampling thread used to do."""
        changes = {"step": progress.step, "total_steps": progress.total, "heartbeat_at": timezone.now(),
                   "metadata": {"live": {"eta": round(eta, 1), "at": time.time(),
                                         "load_seconds": self.load_seconds}}}
        payload = {"step": progress.step, "total": progress.total,
                   "eta": round(eta, 1), "elapsed": round(progress.elapsed, 2)}
        if not self._sent_any:
            payload["load_seconds"] = self.load_seconds
            self._sent_any = True
        preview = progress.preview  # made now, from the step's own x0 (the engine captured it)
        if preview is not None:
            # Kept on the row in the same update, for clients that (re)connect or poll.
            payload["preview"] = changes["preview"] = preview_data_url(preview)
        # One update (the progress and the event's sequence number) and one read (that number and
        # the cancel flag) instead of four statements: the ORM's Python work on this thread holds
        # the GIL the sampling thread needs between its torch ops (docs/PERFORMANCE.md).
        rows = Generation.objects.filter(pk=self.job.pk)
        rows.update(event_seq=F("event_seq") + 1, **changes)
        read_at = time.monotonic()
        seq, cancel = rows.values_list("event_seq", "cancel_requested").get()
        self._remember_cancel(cancel, read_at)
        events.publish(self.job, "generation.progress", seq=seq, **payload)
