from django.contrib import admin

from gallery.models import Image


@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "prompt", "visibility", "saved", "hidden", "created_at")
    list_filter = ("visibility", "saved", "hidden", "model")
    search_fields = ("prompt", "owner__username")
    raw_id_fields = ("owner", "generation")
