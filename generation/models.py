from django.db import models


class WorkerProbe(models.Model):
    """A round trip through the job queue: proves some worker is consuming messages.

    Written by the web side, answered by whichever worker picks up the message
    (`generation.tasks.answer_worker_probe`); `manage.py probe_workers` uses it.
    """

    created_at = models.DateTimeField(auto_now_add=True)
    answered_at = models.DateTimeField(null=True, blank=True)
    answered_by = models.CharField(max_length=200, blank=True, help_text="host:pid/thread of the worker")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self):
        state = f"answered by {self.answered_by}" if self.answered_at else "unanswered"
        return f"Worker probe {self.pk} ({state})"
