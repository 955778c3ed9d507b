"""REST API views of images, albums, likes, reports and explore (/api/v1/). Thin: rules live
in `gallery.services` and on the models; anything a person may not see is a 404."""

from __future__ import annotations

from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.db import DataError
from django.db.models import Exists, OuterRef
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import generics, serializers
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.settings import api_settings
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.views import APIView

from gallery import access, services, uploads
from gallery import loras as loras_service
from gallery.media import serve_file
from gallery.models import Album, Image, Like, Lora, Report
from gallery.serializers import (AlbumCreateSerializer, AlbumDetailSerializer, AlbumImagesResultSerializer,
                                 AlbumImagesSerializer, AlbumSerializer, AlbumUpdateSerializer,
                                 ExplorePageSerializer, ImageSerializer, ImageUpdateSerializer, ImageUploadResultSerializer,
                                 ImageUploadSerializer,
                                 LikeStateSerializer, LoraSerializer, LoraUpdateSerializer, LoraUploadSerializer,
                                 ReportCreateSerializer, ReportSerializer)
from generation.forms import form_id

Visibility = Image.Visibility


def with_liked(images, user):
    return images.annotate(liked_by_me=Exists(Like.objects.filter(user=user, image=OuterRef("pk"))))


def images_for(request):
    return with_liked(Image.objects.select_related("owner", "model"), request.user)


def visible_image(request, pk) -> Image:
    return access.viewable(images_for(request), pk, request.user)


def editable_image(request, pk) -> Image:
    return access.editable(images_for(request), pk, request.user)


def visible_album(request, pk) -> Album:
    return access.viewable(Album.objects.select_related("owner"), pk, request.user)


def editable_album(request, pk) -> Album:
    return access.editable(Album.objects.select_related("owner"), pk, request.user)


def validated(serializer_class, request, **kwargs) -> dict:
    serializer = serializer_class(data=request.data, **kwargs)
    serializer.is_valid(raise_exception=True)
    return serializer.validated_data


def yes_no(value: str, name: str) -> bool:
    if value.lower() in ("true", "1", "yes"):
        return True
    if value.lower() in ("false", "0", "no"):
        return False
    raise ValidationError({name: "must be true or false"})


# --- Images ---------------------------------------------------------------------------------------

@extend_schema(tags=["images"])
class ImageList(generics.ListAPIView):
    serializer_class = ImageSerializer

    def get_parsers(self):  # ImageUploadParser is defined with the other bounded parsers, below
        return [parser() for parser in (*api_settings.DEFAULT_PARSER_CLASSES, ImageUploadParser)]

    def get_queryset(self):
        params, user = self.request.query_params, self.request.user
        images = with_liked(Image.objects.owned_by(user), user).select_related("owner", "model")
        if params.get("visibility"):
            if params["visibility"] not in Visibility.values:
                raise ValidationError({"visibility": f"must be one of: {', '.join(Visibility.values)}"})
            images = images.filter(visibility=params["visibility"])
        if params.get("saved"):
            images = images.filter(saved=yes_no(params["saved"], "saved"))
        if params.get("generation"):
            images = images.filter(generation_id=form_id(params["generation"], "generation"))
        return services.search_images(images, params.get("q", ""), params.get("model", ""))

    @extend_schema(summary="Your images, newest first", parameters=[
        OpenApiParameter("visibility", str, enum=Visibility.values),
        OpenApiParameter("saved", bool, description="Only kept (true) or unsaved (false) images"),
        OpenApiParameter("generation", int, description="Only the images of this job"),
        OpenApiParameter("model", str, description="Model slug"),
        OpenApiParameter("q", str, description="Words that must all appear in the prompt"),
    ])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(summary="Upload your own pictures (PNG, JPEG, WebP, or zips with .txt captions) as private images",
                   request={"multipart/form-data": ImageUploadSerializer}, responses={201: ImageUploadResultSerializer})
    def post(self, request):
        data = validated(ImageUploadSerializer, request)
        images, album = uploads.upload_images(request.user, request.FILES.getlist("files"),
                                              caption=data.get("caption", ""), album_id=data.get("album"))
        return Response({"images": ImageSerializer(images, many=True, context={"request": request}).data,
                         "album": album.pk if album else None}, status=201)


@extend_schema(tags=["images"])
class ImageDetail(APIView):
    @extend_schema(summary="One image: yours, or anyone's shared one", responses={200: ImageSerializer})
    def get(self, request, pk):
        return Response(ImageSerializer(visible_image(request, pk), context={"request": request}).data)

    @extend_schema(summary="Share or keep your image", request=ImageUpdateSerializer,
                   responses={200: ImageSerializer})
    def patch(self, request, pk):
        image = editable_image(request, pk)
        data = validated(ImageUpdateSerializer, request)
        if "saved" in data:
            image.set_saved(data["saved"])
        if "visibility" in data:
            services.set_image_visibility(image, data["visibility"])
        return Response(ImageSerializer(visible_image(request, pk), context={"request": request}).data)

    @extend_schema(summary="Delete your image and its files", responses={204: None})
    def delete(self, request, pk):
        editable_image(request, pk).delete()
        return Response(status=204)


class JSONErrorsOnly(BaseContentNegotiation):
    """The file is the answer whatever the client accepts (`Accept: image/png` included); only
    errors are rendered, always as JSON."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@extend_schema(tags=["images"], summary="Download the original PNG, generation parameters embedded",
               responses={(200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="The PNG")})
class ImageFile(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONErrorsOnly

    def get(self, request, pk):
        image = visible_image(request, pk)
        return serve_file(image.file, image.download_name)


@extend_schema(tags=["likes"])
class ImageLike(APIView):
    def state(self, image) -> Response:
        image.refresh_from_db(fields=["like_count"])
        return Response({"liked": Like.objects.filter(user=self.request.user, image=image).exists(),
                         "like_count": image.like_count})

    @extend_schema(summary="Like an image (again: no change)", request=None, responses={200: LikeStateSerializer})
    def post(self, request, pk):
        image = visible_image(request, pk)
        services.like_image(request.user, image)
        return self.state(image)

    @extend_schema(summary="Take your like back", responses={200: LikeStateSerializer})
    def delete(self, request, pk):
        image = visible_image(request, pk)
        services.unlike_image(request.user, image)
        return self.state(image)


@extend_schema(tags=["likes"], summary="Images you like, most recently liked first")
class LikeList(generics.ListAPIView):
    serializer_class = ImageSerializer

    def get_queryset(self):
        user = self.request.user
        liked = Like.objects.filter(user=user).values("image_id")
        return with_liked(Image.objects.visible_to(user), user).filter(pk__in=liked).select_related("owner", "model")


@extend_schema(tags=["reports"], summary="Report someone's image to staff", request=ReportCreateSerializer,
               responses={201: ReportSerializer})
class ImageReport(APIView):
    def post(self, request, pk):
        image = visible_image(request, pk)
        data = validated(ReportCreateSerializer, request)
        report = services.report_image(request.user, image, data["reason"], data.get("text", ""))
        return Response(ReportSerializer(report).data, status=201)


@extend_schema(tags=["reports"], summary="Report someone's LoRA to staff", request=ReportCreateSerializer,
               responses={201: ReportSerializer})
class LoraReport(APIView):
    def post(self, request, pk):
        lora = visible_lora(request, pk)
        data = validated(ReportCreateSerializer, request)
        report = services.report_lora(request.user, lora, data["reason"], data.get("text", ""))
        return Response(ReportSerializer(report).data, status=201)


@extend_schema(tags=["reports"], summary="Your reports and what became of them")
class ReportList(generics.ListAPIView):
    serializer_class = ReportSerializer

    def get_queryset(self):
        return Report.objects.filter(reporter=self.request.user)


# --- Albums ---------------------------------------------------------------------------------------

@extend_schema(tags=["albums"])
class AlbumList(generics.ListAPIView):
    serializer_class = AlbumSerializer

    def get_queryset(self):
        return Album.objects.filter(owner=self.request.user).select_related("owner")

    @extend_schema(summary="Your albums, newest first")
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(summary="Make an album", request=AlbumCreateSerializer, responses={201: AlbumDetailSerializer})
    def post(self, request):
        data = validated(AlbumCreateSerializer, request)
        album = services.create_album(request.user, data["title"], data.get("description", ""),
                                      data.get("visibility", Album.Visibility.PRIVATE))
        body = AlbumDetailSerializer(album, context={"request": request}).data
        return Response(body, status=201, headers={"Location": request.build_absolute_uri(body["url"])})


@extend_schema(tags=["albums"])
class AlbumDetail(APIView):
    @extend_schema(summary="An album: yours, or anyone's shared one", responses={200: AlbumDetailSerializer})
    def get(self, request, pk):
        return Response(AlbumDetailSerializer(visible_album(request, pk), context={"request": request}).data)

    @extend_schema(summary="Rename, describe, share or set the cover of your album", request=AlbumUpdateSerializer,
                   responses={200: AlbumDetailSerializer})
    def patch(self, request, pk):
        album = editable_album(request, pk)
        data = validated(AlbumUpdateSerializer, request)
        cover = False
        if "cover" in data:
            cover = None if data["cover"] is None else album.images.filter(pk=data["cover"]).first()
            if data["cover"] is not None and cover is None:
                raise ValidationError({"cover": "must be an image in this album"})
        services.update_album(album, title=data.get("title"), description=data.get("description"),
                              visibility=data.get("visibility"), cover=cover)
        return Response(AlbumDetailSerializer(visible_album(request, pk), context={"request": request}).data)

    @extend_schema(summary="Delete your album (its images stay)", responses={204: None})
    def delete(self, request, pk):
        editable_album(request, pk).delete()
        return Response(status=204)


@extend_schema(tags=["albums"], summary="Add your images to your album", request=AlbumImagesSerializer,
               responses={200: AlbumImagesResultSerializer})
class AlbumImages(APIView):
    def post(self, request, pk):
        album = editable_album(request, pk)
        wanted = list(dict.fromkeys(validated(AlbumImagesSerializer, request)["images"]))
        images = list(Image.objects.owned_by(album.owner).filter(pk__in=wanted))
        missing = sorted(set(wanted) - {image.pk for image in images})
        if missing:
            raise ValidationError({"images": f"not among your images: {missing}"})
        added = services.add_to_album(album, images)
        return Response({"added": added, "album": AlbumSerializer(album, context={"request": request}).data})


@extend_schema(tags=["albums"], summary="Take an image out of your album (the image stays)",
               responses={204: None})
class AlbumImage(APIView):
    def delete(self, request, pk, image_id):
        album = editable_album(request, pk)
        if not services.remove_from_album(album, [image_id]):
            raise Http404("That image is not in this album.")
        return Response(status=204)


@extend_schema(tags=["albums"], summary="Put your album's images in this order (those not named follow)",
               request=AlbumImagesSerializer, responses={200: AlbumDetailSerializer})
class AlbumOrder(APIView):
    def post(self, request, pk):
        album = editable_album(request, pk)
        order = list(dict.fromkeys(validated(AlbumImagesSerializer, request)["images"]))
        services.reorder_album(album, order)
        return Response(AlbumDetailSerializer(album, context={"request": request}).data)


# --- Explore -----------------------------------------------------------------------------------------

class ExploreQuery(serializers.Serializer):
    order = serializers.ChoiceField(choices=services.EXPLORE_ORDERS, required=False, default="newest")
    q = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")
    model = serializers.CharField(required=False, allow_blank=True, max_length=100, default="")
    cursor = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")
    limit = serializers.IntegerField(required=False, min_value=1, max_value=100, default=24)


@extend_schema(tags=["explore"], summary="Public images of everyone; search with q",
               parameters=[ExploreQuery], responses={200: ExplorePageSerializer})
class Explore(APIView):
    def get(self, request):
        query = ExploreQuery(data=request.query_params)
        query.is_valid(raise_exception=True)
        options = query.validated_data
        try:
            page, next_cursor = services.explore(options["order"], options["q"], options["model"],
                                                 options["cursor"], options["limit"])
        except (ValueError, TypeError, OverflowError, DataError):
            # A cursor edited by hand: right shape, nonsense values.
            raise ValidationError({"cursor": "Invalid cursor: pass back a `next` link unchanged."}) from None
        images = with_liked(Image.objects.filter(pk__in=[image.pk for image in page]), request.user)
        liked = dict(images.values_list("pk", "liked_by_me"))
        for image in page:
            image.liked_by_me = liked.get(image.pk, False)
        next_url = None
        if next_cursor:
            params = request.query_params.copy()
            params["cursor"] = next_cursor
            next_url = request.build_absolute_uri(f"{request.path}?{params.urlencode()}")
        return Response({"next": next_url, "previous": None,
                         "results": ImageSerializer(page, many=True, context={"request": request}).data})


# --- LoRAs ------------------------------------------------------------------------------------------

def visible_lora(request, pk) -> Lora:
    return access.viewable(Lora.objects.select_related("owner", "base_model"), pk, request.user)


def editable_lora(request, pk) -> Lora:
    return access.editable(Lora.objects.select_related("owner", "base_model"), pk, request.user)


class LoraUploadTooLarge(APIException):
    status_code = 413
    default_detail = "The upload is larger than a LoRA may be."
    default_code = "body_too_large"


class BoundedLoraParser:
    """Multipart / form parsing of a LoRA upload: refused as 413 before reading a body over the cap,
    Django's own form limits a 413 / 400 rather than an error page."""

    max_bytes = loras_service.MAX_LORA_UPLOAD_BYTES
    too_large = f"A LoRA file may be at most {loras_service.MAX_LORA_UPLOAD_BYTES // 2**20} MiB."

    def parse(self, stream, media_type=None, parser_context=None):
        try:
            length = int(parser_context["request"].META.get("CONTENT_LENGTH") or 0)
        except (TypeError, ValueError):
            raise ParseError("Content-Length is not a number") from None
        if length > self.max_bytes + 1024 * 1024:
            raise LoraUploadTooLarge(self.too_large)
        try:
            return super().parse(stream, media_type, parser_context)
        except RequestDataTooBig:
            raise LoraUploadTooLarge("The text fields of this form are too large.") from None
        except SuspiciousOperation as error:
            raise ParseError(f"Form parse error - {error}") from None


class LoraMultiPartParser(BoundedLoraParser, MultiPartParser):
    pass


class LoraFormParser(BoundedLoraParser, FormParser):
    pass


class ImageUploadParser(BoundedLoraParser, MultiPartParser):
    """An image upload's body: refused (413) before it is read when it is over the upload's cap."""

    max_bytes = uploads.MAX_UPLOAD_BYTES
    too_large = f"An upload may be at most {uploads.MAX_UPLOAD_BYTES // 2**20} MB of pictures."


@extend_schema(tags=["loras"])
class LoraList(generics.ListAPIView):
    serializer_class = LoraSerializer
    parser_classes = [*api_settings.DEFAULT_PARSER_CLASSES, LoraMultiPartParser, LoraFormParser]

    def get_queryset(self):
        params = self.request.query_params
        if params.get("mine"):
            loras = Lora.objects.filter(owner=self.request.user) if yes_no(params["mine"], "mine") else \
                loras_service.listing(self.request.user).exclude(owner=self.request.user)
            return loras_service.search(loras.select_related("owner", "base_model"), params.get("q", ""))
        return loras_service.listing(self.request.user, params.get("q", ""), params.get("model", ""))

    @extend_schema(summary="Your LoRAs and everyone's public ones, newest first", parameters=[
        OpenApiParameter("q", str, description="Words that must all appear in the name, description or trigger words"),
        OpenApiParameter("model", str, description="Base model slug"),
        OpenApiParameter("mine", bool, description="Only yours (true) or only others' (false)"),
    ])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(summary="Upload a LoRA (.safetensors, kohya or diffusers/PEFT keys), checked against its base model",
                   request={"multipart/form-data": LoraUploadSerializer}, responses={201: LoraSerializer})
    def post(self, request):
        data = validated(LoraUploadSerializer, request)
        model = loras_service.resolve_base_model(data.get("base_model"))
        lora = loras_service.upload_lora(
            request.user, name=data["name"], data=loras_service.read_upload(data["file"]), base_model=model,
            trigger_words=data.get("trigger_words", ""), description=data.get("description", ""),
            visibility=data.get("visibility", Lora.Visibility.PRIVATE))
        body = LoraSerializer(lora, context={"request": request}).data
        return Response(body, status=201, headers={"Location": request.build_absolute_uri(body["url"])})


@extend_schema(tags=["loras"])
class LoraDetail(APIView):
    @extend_schema(summary="A LoRA: yours, or anyone's shared one", responses={200: LoraSerializer})
    def get(self, request, pk):
        return Response(LoraSerializer(visible_lora(request, pk), context={"request": request}).data)

    @extend_schema(summary="Rename, describe or share your LoRA", request=LoraUpdateSerializer,
                   responses={200: LoraSerializer})
    def patch(self, request, pk):
        lora = editable_lora(request, pk)
        data = validated(LoraUpdateSerializer, request)
        loras_service.update_lora(lora, **data)
        return Response(LoraSerializer(visible_lora(request, pk), context={"request": request}).data)

    @extend_schema(summary="Delete your LoRA and its file", responses={204: None})
    def delete(self, request, pk):
        editable_lora(request, pk).delete()
        return Response(status=204)


@extend_schema(tags=["loras"], summary="Download a LoRA in kohya (A1111 / ComfyUI) format",
               responses={(200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY)})
class LoraFile(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = JSONErrorsOnly

    def get(self, request, pk):
        return loras_service.kohya_response(visible_lora(request, pk))
