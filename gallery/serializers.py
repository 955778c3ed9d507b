"""REST API shapes of images, albums, likes and reports.

Input serializers refuse unknown fields; the rules themselves (who may do what, what a
valid album title is) live in `gallery.services` and on the models.
"""

from __future__ import annotations

from django.urls import reverse
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from gallery.models import Album, Image, Like, Lora, Report
from generation.serializers import StrictSerializer


class ImageSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    file = serializers.SerializerMethodField(help_text="Download the original PNG (parameters embedded)")
    thumbnail = serializers.SerializerMethodField()
    page_url = serializers.SerializerMethodField()
    owner = serializers.CharField(source="owner.username", read_only=True)
    model = serializers.SlugRelatedField(slug_field="slug", read_only=True, allow_null=True)
    generation = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True)
    liked = serializers.SerializerMethodField(help_text="Whether you like it")

    class Meta:
        model = Image
        fields = ["id", "url", "file", "thumbnail", "page_url", "owner", "generation", "width", "height", "seed",
                  "prompt", "negative_prompt", "model", "model_name", "sampler", "steps", "guidance_scale",
                  "clip_score", "parameters", "visibility", "saved", "hidden", "like_count", "liked",
                  "published_at", "created_at"]
        read_only_fields = fields

    def get_url(self, image) -> str:
        return reverse("api:image-detail", args=[image.pk])

    def get_file(self, image) -> str:
        return reverse("api:image-file", args=[image.pk])

    def get_thumbnail(self, image) -> str:
        return image.thumbnail_url()

    def get_page_url(self, image) -> str:
        return image.get_absolute_url()

    def get_liked(self, image) -> bool:
        if hasattr(image, "liked_by_me"):
            return bool(image.liked_by_me)
        request = self.context.get("request")
        user = getattr(request, "user", None)
        return bool(user and user.is_authenticated and Like.objects.filter(user=user, image=image).exists())


class ImageUpdateSerializer(StrictSerializer):
    visibility = serializers.ChoiceField(choices=Image.Visibility.choices, required=False,
                                         help_text="Sharing an image (unlisted, public) also keeps it (saved)")
    saved = serializers.BooleanField(required=False, help_text="Unsaved private images are purged after a while")


class LikeStateSerializer(serializers.Serializer):
    liked = serializers.BooleanField()
    like_count = serializers.IntegerField()


def viewer(serializer):
    request = serializer.context.get("request")
    return getattr(request, "user", None)


class AlbumSerializer(serializers.ModelSerializer):
    """An album as the person asking may see it: its cover and count leave out the images they may
    not see (`Album.items_visible_to`, the rule the album page follows too)."""

    owner = serializers.CharField(source="owner.username", read_only=True)
    cover = serializers.SerializerMethodField(help_text="An image of the album you may see; null: none")
    image_count = serializers.SerializerMethodField(help_text="The images you may see")
    url = serializers.SerializerMethodField()

    class Meta:
        model = Album
        fields = ["id", "url", "owner", "title", "description", "visibility", "cover", "image_count",
                  "created_at", "updated_at"]
        read_only_fields = fields

    @extend_schema_field(serializers.IntegerField(allow_null=True))
    def get_cover(self, album) -> int | None:
        cover = album.cover_visible_to(viewer(self)) if viewer(self) is not None else None
        return cover.pk if cover is not None else None

    def get_image_count(self, album) -> int:
        return album.items_visible_to(viewer(self)).count() if viewer(self) is not None else 0

    def get_url(self, album) -> str:
        return reverse("api:album-detail", args=[album.pk])


class AlbumDetailSerializer(AlbumSerializer):
    images = serializers.SerializerMethodField(help_text="In album order; only those you may see")

    class Meta(AlbumSerializer.Meta):
        fields = AlbumSerializer.Meta.fields + ["images"]
        read_only_fields = fields

    @extend_schema_field(ImageSerializer(many=True))
    def get_images(self, album) -> list:
        items = album.items_visible_to(self.context["request"].user).select_related("image__owner", "image__model")
        return ImageSerializer([item.image for item in items[:1000]], many=True, context=self.context).data


class AlbumCreateSerializer(StrictSerializer):
    title = serializers.CharField(max_length=120, help_text="1 to 120 characters")
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    visibility = serializers.ChoiceField(choices=Album.Visibility.choices, required=False, default=Album.Visibility.PRIVATE,
                                         help_text="Sharing an album shares its private images the same way")


class AlbumUpdateSerializer(StrictSerializer):
    title = serializers.CharField(required=False, max_length=120)
    description = serializers.CharField(required=False, allow_blank=True, max_length=5000)
    visibility = serializers.ChoiceField(choices=Album.Visibility.choices, required=False)
    cover = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**63 - 1,
                                     help_text="An image in this album; null: none")


class AlbumImagesSerializer(StrictSerializer):
    images = serializers.ListField(child=serializers.IntegerField(min_value=1, max_value=2**63 - 1),
                                   min_length=1, max_length=500, help_text="Image ids, yours")


class AlbumImagesResultSerializer(serializers.Serializer):
    added = serializers.IntegerField(required=False)
    album = AlbumSerializer()


class ReportCreateSerializer(StrictSerializer):
    reason = serializers.ChoiceField(choices=Report.Reason.choices)
    text = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class ReportSerializer(serializers.ModelSerializer):
    image = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True, help_text="The image reported, or null")
    lora = serializers.PrimaryKeyRelatedField(read_only=True, allow_null=True, help_text="The LoRA reported, or null")

    class Meta:
        model = Report
        fields = ["id", "image", "lora", "reason", "text", "status", "created_at"]
        read_only_fields = fields


class ExplorePageSerializer(serializers.Serializer):
    next = serializers.CharField(allow_null=True)
    previous = serializers.CharField(allow_null=True)
    results = ImageSerializer(many=True)


# --- LoRAs -------------------------------------------------------------------------------------------

class LoraSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    file = serializers.SerializerMethodField(help_text="Download in kohya (A1111 / ComfyUI) format")
    page_url = serializers.SerializerMethodField()
    owner = serializers.CharField(source="owner.username", read_only=True)
    base_model = serializers.SlugRelatedField(slug_field="slug", read_only=True)
    prompt_name = serializers.SerializerMethodField(help_text="How you name it in <lora:name:weight>")
    hash = serializers.CharField(source="short_hash", read_only=True, help_text="A1111's short LoRA hash")

    class Meta:
        model = Lora
        fields = ["id", "url", "file", "page_url", "owner", "name", "prompt_name", "base_model", "trigger_words",
                  "description", "hash", "file_hash", "file_size", "key_format", "rank", "alpha", "layer_count",
                  "visibility", "hidden", "created_at"]
        read_only_fields = fields

    def get_url(self, lora) -> str:
        return reverse("api:lora-detail", args=[lora.pk])

    def get_file(self, lora) -> str:
        return reverse("api:lora-file", args=[lora.pk])

    def get_page_url(self, lora) -> str:
        return lora.get_absolute_url()

    def get_prompt_name(self, lora) -> str:
        request = self.context.get("request")
        return lora.request_name(getattr(request, "user", None))


class ImageUploadSerializer(StrictSerializer):
    files = serializers.ListField(child=serializers.FileField(), allow_empty=False,
                                  help_text="Pictures (PNG, JPEG, WebP; at most 20 MB each) or zips of them with "
                                            "same-named .txt captions; send the field once per file")
    caption = serializers.CharField(max_length=1000, required=False, allow_blank=True,
                                    help_text="The caption (prompt) of pictures without their own: a PNG's A1111 "
                                              "parameters, else a same-named .txt in the zip")
    album = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=10**18 - 1,
                                     help_text="One of your albums to add them to")


class ImageUploadResultSerializer(serializers.Serializer):
    images = ImageSerializer(many=True)
    album = serializers.IntegerField(allow_null=True)


class LoraUploadSerializer(StrictSerializer):
    file = serializers.FileField(help_text="A LoRA .safetensors file, kohya/A1111 or diffusers/PEFT keys")
    name = serializers.CharField(max_length=60)
    base_model = serializers.CharField(max_length=100, required=False, allow_blank=True,
                                       help_text="Model slug; the default model when empty")
    trigger_words = serializers.CharField(max_length=300, required=False, allow_blank=True)
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    visibility = serializers.ChoiceField(choices=Image.Visibility.choices, required=False)


class LoraUpdateSerializer(StrictSerializer):
    name = serializers.CharField(max_length=60, required=False)
    trigger_words = serializers.CharField(max_length=300, required=False, allow_blank=True)
    description = serializers.CharField(max_length=5000, required=False, allow_blank=True)
    visibility = serializers.ChoiceField(choices=Image.Visibility.choices, required=False)
