from django.contrib import admin

from generation.models import WorkerProbe


@admin.register(WorkerProbe)
class WorkerProbeAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "answered_at", "answered_by")
    readonly_fields = ("created_at", "answered_at", "answered_by")
