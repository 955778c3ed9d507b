from django.contrib import admin
from django.utils.html import format_html_join

from generation.models import DiffusionModel, Generation, LoraTraining, WorkerProbe
from generation.registry import record_content_hash


@admin.register(DiffusionModel)
class DiffusionModelAdmin(admin.ModelAdmin):
    list_display = ("name", "slug", "family", "source", "is_default", "enabled", "has_clip", "has_guide_unet")
    list_filter = ("family", "enabled", "is_default")
    search_fields = ("name", "slug", "source")
    prepopulated_fields = {"slug": ("name",)}

    def save_model(self, request, obj, form, change):
        record_content_hash(obj)  # once, here, rather than on a client's request
        super().save_model(request, obj, form, change)


@admin.register(Generation)
class GenerationAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "model", "mode", "status", "step", "total_steps", "attempts", "worker",
                    "created_at")
    list_filter = ("status", "model")
    search_fields = ("owner__username", "params__prompt", "worker")
    readonly_fields = ("created_at", "started_at", "finished_at", "heartbeat_at", "event_seq", "error_detail",
                       "source_pictures")
    raw_id_fields = ("owner", "source_image")

    @admin.display(description="Source pictures")
    def source_pictures(self, job):
        """Links to the stored source picture and mask (served by `generation:source`, never as media)."""
        links = [(job.source_url(kind), label) for kind, label, stored in (
            ("init", "init image", job.init_image), ("mask", "mask", job.mask)) if stored]
        if not links:
            return "—"
        return format_html_join(" · ", '<a href="{}">{}</a>', links)


@admin.register(WorkerProbe)
class WorkerProbeAdmin(admin.ModelAdmin):
    list_display = ("id", "created_at", "answered_at", "answered_by")
    readonly_fields = ("created_at", "answered_at", "answered_by")


@admin.register(LoraTraining)
class LoraTrainingAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "name", "base_model", "status", "step", "total_steps", "attempts", "worker",
                    "created_at")
    list_filter = ("status", "base_model")
    search_fields = ("owner__username", "name", "trigger", "worker")
    readonly_fields = ("created_at", "started_at", "finished_at", "heartbeat_at", "event_seq", "error_detail",
                       "losses", "samples", "start_step")
    raw_id_fields = ("owner", "album", "lora")
