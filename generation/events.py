"""Live job events: one helper names the groups, one function publishes.

Every event is a dict with a dotted `type` (`generation.progress`, …), the job id
and a per-job sequence number reserved in the database, so a client can drop
anything older than the snapshot it received on connect. Events are
best-effort; the `Generation` row holds the durable state.
"""

import asyncio
import logging
import threading

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer

logger = logging.getLogger(__name__)

# The server's event loop, when this process is the ASGI server. In embedded mode
# workers are threads of the server and the in-memory channel layer is plain
# asyncio queues, which are not thread-safe: events from a worker thread must be
# handed to the loop the consumers run on. Worker processes have no such loop.
_server_loop: asyncio.AbstractEventLoop | None = None
_loop_lock = threading.Lock()


def remember_server_loop() -> None:
    """Called by consumers (on the server loop) so worker threads can publish onto it."""
    global _server_loop
    loop = asyncio.get_running_loop()
    if _server_loop is not loop:
        with _loop_lock:
            _server_loop = loop


def job_group(job_id: int) -> str:
    return f"generation.job.{job_id}"


def training_group(training_id: int) -> str:
    """The stream of one LoRA training (`LoraTraining`): its owner's and staff's training page."""
    return f"training.job.{training_id}"


def user_group(user_id: int) -> str:
    return f"generation.user.{user_id}"


def account_group(user_id: int) -> str:
    """Every open stream of a person (their jobs', their own, by cookie or token): for closing them."""
    return f"account.{user_id}"


def event_for(job, event_type: str, *, seq: int | None = None, **payload) -> dict:
    """The event; ``seq``: a sequence number the caller already reserved on the row (in the same
    update as its own changes), else one is reserved here."""
    return {"type": event_type, "job": job.pk, "seq": job.next_event_seq() if seq is None else seq, **payload}


async def _group_send(groups: list[str], message: dict) -> None:
    layer = get_channel_layer()
    for group in groups:
        await layer.group_send(group, message)


async def _send_to_groups(groups: list[str], event: dict) -> None:
    await _group_send(groups, {"type": "generation.event", "event": event})


def _deliver(groups: list[str], message: dict) -> None:
    """Send `message` to `groups` from any thread (see `_server_loop`); raises what sending raised."""
    loop = _server_loop
    if loop is not None and loop.is_running() and not _on_loop(loop):
        asyncio.run_coroutine_threadsafe(_group_send(groups, message), loop).result(timeout=5)
    else:
        async_to_sync(_group_send)(groups, message)


def publish(job, event_type: str, *, seq: int | None = None, **payload) -> dict:
    """Send an event about `job` to its own stream and to its owner's stream (``seq``: see `event_for`)."""
    event = event_for(job, event_type, seq=seq, **payload)
    try:
        _deliver([job_group(job.pk), user_group(job.owner_id)], {"type": "generation.event", "event": event})
    except Exception:  # best-effort: the row is the truth, a reconnect resyncs
        logger.warning("Could not publish %s for job %s", event_type, job.pk, exc_info=True)
    return event


def publish_training(training, event_type: str, **payload) -> dict:
    """Send an event (`training.progress`, ...) about a LoRA training to its stream; best-effort
    like `publish`, with a sequence number reserved on the training's row."""
    event = {"type": event_type, "training": training.pk, "seq": training.next_event_seq(), **payload}
    try:
        _deliver([training_group(training.pk)], {"type": "training.event", "event": event})
    except Exception:  # best-effort: the row is the truth, a reconnect resyncs
        logger.warning("Could not publish %s for training %s", event_type, training.pk, exc_info=True)
    return event


def close_streams_of(user_id: int) -> None:
    """Close every open stream of a person (a suspension: their cookie and tokens no longer work,
    so what they already had open must not go on answering). Consumers close with 4401."""
    try:
        _deliver([account_group(user_id)], {"type": "account.closed"})
    except Exception:
        logger.error("Could not close the open streams of person %s", user_id, exc_info=True)


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
