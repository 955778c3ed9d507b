"""REST API views of models and generation jobs (/api/v1/). Thin: they call `services`.

Auth, token scopes, throttles, error bodies (a service's `admission.Refusal` included) and
pagination come from `settings.REST_FRAMEWORK` (see the `ldmsite/api/` package).
"""

from __future__ import annotations

from django.conf import settings
from django.http import Http404
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import OpenApiParameter, extend_schema, inline_serializer
from rest_framework import generics, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from generation.admission import images_requested_today
from generation.models import DiffusionModel, Generation
from generation.serializers import (DiffusionModelSerializer, GenerationRequestSerializer, GenerationSerializer,
                                    websocket_url)
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


@extend_schema(tags=["generations"])
class GenerationList(generics.ListAPIView):
    serializer_class = GenerationSerializer
    required_scopes = {"POST": "generate"}
    throttle_generation = True

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

    @extend_schema(summary="Submit a job", request=GenerationRequestSerializer,
                   responses={202: GenerationSerializer},
                   description="Queues a job and answers 202 at once, with the job, its address in `Location` and "
                               "`websocket_url` to stream its progress. Poll the job or stream it until `status` "
                               "is succeeded, failed or cancelled. Needs the generate scope.")
    def post(self, request):
        body = request.data
        if not isinstance(body, dict):
            raise ValidationError({"__all__": "The body must be a JSON object of request fields."})
        job = submit_generation(request.user, body)
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

