"""Websocket streams of job events: one job, or all of the signed-in person's jobs.

On connect the consumer joins the group first and then sends a snapshot of the
current state, so nothing that happens in between is missed; relayed events not
newer than what the client already has (by sequence number) are dropped.

A refused connection is accepted and closed at once with its code (4401: no usable
credentials; 4404: no such job, or not yours), so a client can tell the two apart. Every
stream also joins its person's account group: a suspension closes them all with 4401.
"""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.contrib.auth import get_user_model

from generation import events
from generation.models import Generation, LoraTraining
from generation.snapshots import job_snapshot
from generation.training_queue import training_snapshot

RECENT_JOBS_IN_SNAPSHOT = 20
CLOSE_UNAUTHENTICATED = 4401
CLOSE_NOT_FOUND = 4404


class GenerationConsumer(AsyncJsonWebsocketConsumer):
    async def connect(self):
        events.remember_server_loop()
        self.joined: list[str] = []
        self.seen: dict[int, int] = {}
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            return await self.refuse(CLOSE_UNAUTHENTICATED)
        job_id = self.scope["url_route"]["kwargs"].get("job_id")
        if job_id is not None:
            if not await self.may_watch(user, job_id):
                return await self.refuse(CLOSE_NOT_FOUND)
            group = events.job_group(job_id)
        else:
            group = events.user_group(user.pk)
        for name in (events.account_group(user.pk), group):
            await self.channel_layer.group_add(name, self.channel_name)
            self.joined.append(name)
        if not await self.still_active(user):  # suspended between the check above and joining
            return await self.refuse(CLOSE_UNAUTHENTICATED)
        await self.accept()
        for snapshot in await self.snapshots(user, job_id):
            self.seen[snapshot["job"]] = snapshot["seq"]
            await self.send_json(snapshot)

    async def refuse(self, code: int) -> None:
        """Accept, then close with `code`: a refusal at the handshake would reach a browser as a bare
        failure, with no code to tell "sign in" from "no such job"."""
        await self.accept()
        await self.close(code=code)

    async def account_closed(self, message):
        """The person was suspended (`events.close_streams_of`)."""
        await self.close(code=CLOSE_UNAUTHENTICATED)

    async def disconnect(self, code):
        for group in getattr(self, "joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive_json(self, content, **kwargs):
        """Clients may ask for a fresh snapshot (e.g. after a gap in sequence numbers)."""
        if isinstance(content, dict) and content.get("type") == "generation.resync":
            user = self.scope["user"]
            job_id = self.scope["url_route"]["kwargs"].get("job_id")
            for snapshot in await self.snapshots(user, job_id):
                self.seen[snapshot["job"]] = snapshot["seq"]
                await self.send_json(snapshot)

    async def generation_event(self, message):
        event = message["event"]
        if event["seq"] <= self.seen.get(event["job"], 0):
            return
        self.seen[event["job"]] = event["seq"]
        await self.send_json(event)

    @database_sync_to_async
    def still_active(self, user) -> bool:
        return get_user_model().objects.filter(pk=user.pk, is_active=True).exists()

    @database_sync_to_async
    def may_watch(self, user, job_id) -> bool:
        return Generation.objects.visible_to(user).filter(pk=job_id).exists()

    @database_sync_to_async
    def snapshots(self, user, job_id) -> list[dict]:
        if job_id is not None:
            jobs = Generation.objects.visible_to(user).filter(pk=job_id)
        else:
            jobs = Generation.objects.filter(owner=user).order_by("-created_at")[:RECENT_JOBS_IN_SNAPSHOT]
        return [job_snapshot(job) for job in jobs.select_related("model").prefetch_related("images")]


class TrainingConsumer(GenerationConsumer):
    """The stream of one LoRA training (``ws/trainings/<id>/``): a snapshot on connect, then
    ``training.*`` events newer than it. Refusals and suspension as for job streams (inherited)."""

    async def connect(self):
        events.remember_server_loop()
        self.joined: list[str] = []
        self.seen = 0
        user = self.scope.get("user")
        if user is None or not user.is_authenticated or not user.is_active:
            return await self.refuse(CLOSE_UNAUTHENTICATED)
        training_id = self.scope["url_route"]["kwargs"]["training_id"]
        if await self.snapshot(user, training_id) is None:
            return await self.refuse(CLOSE_NOT_FOUND)
        for name in (events.account_group(user.pk), events.training_group(training_id)):
            await self.channel_layer.group_add(name, self.channel_name)
            self.joined.append(name)
        if not await self.still_active(user):
            return await self.refuse(CLOSE_UNAUTHENTICATED)
        await self.accept()
        await self.send_snapshot(user, training_id)

    async def send_snapshot(self, user, training_id):
        snapshot = await self.snapshot(user, training_id)
        if snapshot is not None:
            self.seen = snapshot["seq"]
            await self.send_json(snapshot)

    async def receive_json(self, content, **kwargs):
        """Clients may ask for a fresh snapshot (e.g. after a gap in sequence numbers)."""
        if isinstance(content, dict) and content.get("type") == "training.resync":
            await self.send_snapshot(self.scope["user"], self.scope["url_route"]["kwargs"]["training_id"])

    async def training_event(self, message):
        event = message["event"]
        if event["seq"] <= self.seen:
            return
        self.seen = event["seq"]
        await self.send_json(event)

    @database_sync_to_async
    def snapshot(self, user, training_id) -> dict | None:
        training = (LoraTraining.objects.visible_to(user).select_related("lora")
                    .filter(pk=training_id).first())
        return training_snapshot(training) if training is not None else None
