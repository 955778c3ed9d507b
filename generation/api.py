"""REST API views of models and generation jobs (/api/v1/). Thin: they call `services`.

Auth, token scopes, throttles, error bodies (a service's `admission.Refusal` included) and
pagination come from `settings.REST_FRAMEWORK` (see the `ldmsite/api/` package).
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import RequestDataTooBig, SuspiciousOperation
from django.http import Http404, QueryDict
from django.shortcuts import get_object_or_404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import APIException, ParseError, ValidationError
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from generation import sources
from generation.admission import images_requested_today
from generation.models import DiffusionModel, Generation
from generation.serializers import (DiffusionModelSerializer, GenerationRequestSerializer, GenerationSerializer,
                                    GenerationUploadSerializer, websocket_url)
from generation.services import cancel_generation, can_manage, submit_generation

Status = Generation.Status


@extend_schema(tags=["models"], summary="List the models you can generate with")
class ModelList(generics.ListAPIView):
    serializer_class = DiffusionModelSerializer
    pagination_class = None  # a handful of rows
    queryset = DiffusionModel.objects.filter(enabled=True)


@extend_schema(tags=["models"], summary="One model, with its limits and samplers")
class ModelDetail(generics.RetrieveAPIView):
    serializer_class = DiffusionModelSerializer
    queryset = DiffusionModel.objects.filter(enabled=True)
    lookup_field = "slug"


# A submission's body: two pictures at most (base64 is 4/3 of the bytes), plus the text fields.
MAX_SUBMISSION_BYTES = 2 * ((sources.MAX_SOURCE_BYTES + 2) // 3 * 4) + 1024 * 1024


class SubmissionTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = (f"The request body is larger than {MAX_SUBMISSION_BYTES // (1024 * 1024)} MB "
                      f"(each picture: at most {sources.MAX_SOURCE_BYTES // (1024 * 1024)} MB).")
    default_code = "body_too_large"


class BoundedBody:
    """A form or multipart parser that refuses a body over ``MAX_SUBMISSION_BYTES`` before reading
    it, and turns Django's own limits (``DATA_UPLOAD_MAX_MEMORY_SIZE`` on the text fields,
    ``DATA_UPLOAD_MAX_NUMBER_FIELDS``) into a 413 / 400 rather than an error page."""

    def parse(self, stream, media_type=None, parser_context=None):
        meta = parser_context["request"].META
        try:
            length = int(meta.get("CONTENT_LENGTH") or 0)
        except (TypeError, ValueError):
            raise ParseError("Content-Length is not a number") from None
        if length > MAX_SUBMISSION_BYTES:
            raise SubmissionTooLarge()
        try:
            return super().parse(stream, media_type, parser_context)
        except RequestDataTooBig:
            raise SubmissionTooLarge("The text fields of this form are too large: send pictures as file parts "
                                     "(multipart/form-data) or in a JSON body.") from None
        except SuspiciousOperation as error:  # too many fields, and the like
            raise ParseError(f"Form parse error - {error}") from None


class SubmissionMultiPartParser(BoundedBody, MultiPartParser):
    pass


class SubmissionFormParser(BoundedBody, FormParser):
    pass


def submission_fields(body) -> dict:
    """A submission's fields: a JSON object as it is; a form's (multipart or urlencoded) with one
    value per field, pictures as the uploaded files."""
    if isinstance(body, QueryDict):
        return {key: body.get(key) for key in body}
    if not isinstance(body, dict):
        raise ValidationError({"__all__": "The body must be a JSON object of request fields."})
    return body


@extend_schema(tags=["generations"])
class GenerationList(generics.ListAPIView):
    serializer_class = GenerationSerializer
    required_scopes = {"POST": "generate"}
    throttle_generation = True
    # JSON (the API's parser, with its limits) and, for pictures as files, multipart and forms.
    parser_classes = [*api_settings.DEFAULT_PARSER_CLASSES, SubmissionMultiPartParser, SubmissionFormParser]

    def get_queryset(self):
        jobs = Generation.objects.filter(owner=self.request.user).select_related("model").prefetch_related("images")
        wanted = self.request.query_params.get("status")
        if wanted:
            if wanted not in Status.values:
                raise ValidationError({"status": f"must be one of: {', '.join(Status.values)}"})
            jobs = jobs.filter(status=wanted)
        return jobs

    @extend_schema(summary="Your jobs, newest first", parameters=[
        OpenApiParameter("status", str, enum=Status.values, description="Only jobs in this state")])
    def get(self, request, *args, **kwargs):
        return super().get(request, *args, **kwargs)

    @extend_schema(summary="Submit a job",
                   request={"application/json": GenerationRequestSerializer,
                            "multipart/form-data": GenerationUploadSerializer,
                            "application/x-www-form-urlencoded": GenerationRequestSerializer},
                   responses={202: GenerationSerializer},
                   description="Queues a job and answers 202 at once, with the job, its address in `Location` and "
                               "`websocket_url` to stream its progress. Poll the job or stream it until `status` "
                               "is succeeded, failed or cancelled. Needs the generate scope.\n\n"
                               "Image to image: send the source picture as `init_image` (base64 or a data: URL in "
                               "JSON; a file part in multipart/form-data) or name an image you can see with "
                               "`source_image`; add a `mask` to inpaint (white = repaint), or `outpaint_*` sides "
                               "with `mode: outpaint`. Without `mode`, it is inferred from what you send.")
    def post(self, request):
        job = submit_generation(request.user, submission_fields(request.data))
        data = GenerationSerializer(job, context={"request": request}).data
        return Response(data, status=202, headers={"Location": request.build_absolute_uri(data["url"])})


@extend_schema(tags=["generations"], summary="One job: state, progress, images")
class GenerationDetail(generics.RetrieveAPIView):
    serializer_class = GenerationSerializer

    def get_queryset(self):
        return Generation.objects.visible_to(self.request.user).select_related("model").prefetch_related("images")


@extend_schema(tags=["generations"], summary="Cancel a job", request=None, responses={200: GenerationSerializer},
               description="A queued job is cancelled at once; a running one stops at its next step (its `status` "
                           "turns to cancelled shortly). Cancelling a finished job changes nothing.")
class GenerationCancel(APIView):
    required_scopes = {"POST": "generate"}

    def post(self, request, pk):
        job = get_object_or_404(Generation.objects.visible_to(request.user), pk=pk)
        if not can_manage(request.user, job):
            raise Http404
        job = cancel_generation(job)
        return Response(GenerationSerializer(job, context={"request": request}).data)


class PictureAnswer(BaseContentNegotiation):
    """The PNG is the answer whatever the client accepts; only errors are rendered, as JSON."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@extend_schema(tags=["generations"], summary="Download a job's stored source picture or mask (PNG)",
               description="`kind`: `init` (the picture the job started from) or `mask` (inpainting). Yours "
                           "(or staff's) only: anyone else gets a 404.",
               parameters=[OpenApiParameter("kind", str, OpenApiParameter.PATH, enum=list(sources.KINDS))],
               responses={(200, "image/png"): OpenApiResponse(OpenApiTypes.BINARY, description="The PNG")})
class GenerationSource(APIView):
    renderer_classes = [JSONRenderer]
    content_negotiation_class = PictureAnswer

    def get(self, request, pk, kind):
        job = Generation.objects.visible_to(request.user).filter(pk=pk).first()
        stored = sources.stored_source(job, kind) if job is not None else None
        if stored is None:
            raise Http404
        return sources.serve_png(stored)


MeSerializer = inline_serializer("Me", {
    "id": serializers.IntegerField(),
    "username": serializers.CharField(),
    "display_name": serializers.CharField(),
    "email": serializers.EmailField(),
    "is_staff": serializers.BooleanField(),
    "token": inline_serializer("MeToken", {
        "name": serializers.CharField(), "prefix": serializers.CharField(),
        "scopes": serializers.ListField(child=serializers.CharField()),
        "expires_at": serializers.DateTimeField(allow_null=True),
    }, allow_null=True, help_text="The token this request used; null for a browser session"),
    "limits": inline_serializer("MeLimits", {
        "active_jobs": serializers.IntegerField(),
        "max_active_jobs": serializers.IntegerField(allow_null=True, help_text="null: no cap (staff)"),
        "images_today": serializers.IntegerField(),
        "daily_image_quota": serializers.IntegerField(allow_null=True, help_text="null: no quota"),
        "request_rate": serializers.CharField(),
        "generate_rate": serializers.CharField(),
    }),
    "websocket_url": serializers.CharField(help_text="Your personal stream of every job's events"),
})


@extend_schema(tags=["account"], summary="Who you are, and where you stand against your limits",
               responses={200: MeSerializer})
class Me(APIView):
    def get(self, request):
        user, token = request.user, request.auth
        quota = settings.LDM_DAILY_IMAGE_QUOTA
        return Response({
            "id": user.pk, "username": user.get_username(), "display_name": user.first_name,
            "email": user.email, "is_staff": user.is_staff,
            "token": {"name": token.name, "prefix": token.prefix, "scopes": token.scopes,
                      "expires_at": token.expires_at} if hasattr(token, "scopes") else None,
            "limits": {
                "active_jobs": Generation.objects.filter(owner=user).active().count(),
                "max_active_jobs": None if user.is_staff else settings.LDM_MAX_ACTIVE_JOBS,
                "images_today": images_requested_today(user),
                "daily_image_quota": None if (user.is_staff or not quota) else quota,
                "request_rate": settings.LDM_API_RATE,
                "generate_rate": settings.LDM_API_GENERATE_RATE,
            },
            "websocket_url": websocket_url(request),
        })

