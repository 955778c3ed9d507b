"""REST API of LoRA trainings (/api/v1/lora-trainings/). Thin: `training_jobs` validates, stores
and cancels. Token scopes as for generation jobs: reading needs read, starting and cancelling a
training generate."""

from __future__ import annotations

from django.http import Http404, QueryDict
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.exceptions import ValidationError
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.views import APIView

from generation.models import LoraTraining
from generation.training_jobs import can_manage, cancel_training, submit_training
from generation.training_queue import training_snapshot

FIELDS = ("name", "trigger", "base_model", "album", "rank", "steps", "learning_rate", "batch_size", "seed")

TrainingRequest = inline_serializer("LoraTrainingRequest", {
    "name": serializers.CharField(help_text="The LoRA to create, as written in <lora:name:weight>"),
    "trigger": serializers.CharField(help_text="Trigger word(s), put in every caption that lacks them"),
    "album": serializers.IntegerField(required=False, help_text="One of your albums (its prompts are the captions)"),
    "base_model": serializers.CharField(required=False, help_text="Model slug (default: the default model)"),
    "rank": serializers.IntegerField(required=False, min_value=1, max_value=128, default=8),
    "steps": serializers.IntegerField(required=False, min_value=1, max_value=20000, default=2000),
    "learning_rate": serializers.FloatField(required=False, default=1e-3),
    "batch_size": serializers.IntegerField(required=False, min_value=1, max_value=64, default=8),
    "seed": serializers.IntegerField(required=False, min_value=0, default=0),
})
TrainingUpload = inline_serializer("LoraTrainingUpload", {
    **{name: field for name, field in TrainingRequest.fields.items() if name != "album"},
    "images": serializers.FileField(help_text="A zip of images with same-named .txt captions"),
})
TRAINING_FIELDS = {
    "id": serializers.IntegerField(),
    "name": serializers.CharField(),
    "trigger": serializers.CharField(),
    "status": serializers.CharField(help_text="queued, running, succeeded, failed or cancelled"),
    "step": serializers.IntegerField(),
    "total": serializers.IntegerField(),
    "start_step": serializers.IntegerField(help_text="Where the latest attempt started (>0: resumed from a "
                                                     "checkpoint)"),
    "position": serializers.IntegerField(allow_null=True),
    "eta": serializers.FloatField(allow_null=True, help_text="Seconds left (running)"),
    "losses": serializers.ListField(child=serializers.ListField(child=serializers.FloatField()),
                                    help_text="[[step, loss], ...], downsampled"),
    "samples_url": serializers.CharField(allow_null=True, help_text="The latest sample grid (PNG)"),
    "error": serializers.CharField(allow_null=True),
    "lora": inline_serializer("TrainedLora", {"id": serializers.IntegerField(), "name": serializers.CharField(),
                                              "prompt_tag": serializers.CharField()}, allow_null=True),
    "websocket_url": serializers.CharField(),
}
Training = inline_serializer("LoraTraining", TRAINING_FIELDS)
TrainingPage = inline_serializer("PaginatedLoraTrainingList", {
    "next": serializers.CharField(allow_null=True),
    "previous": serializers.CharField(allow_null=True),
    "results": inline_serializer("LoraTrainingItem", TRAINING_FIELDS, many=True)})


def training_data(request, training: LoraTraining) -> dict:
    snapshot = training_snapshot(training)
    snapshot.pop("type")
    snapshot["id"] = snapshot.pop("training")
    scheme = "wss" if request.is_secure() else "ws"
    snapshot["websocket_url"] = f"{scheme}://{request.get_host()}/ws/trainings/{training.pk}/"
    return snapshot


@extend_schema(tags=["loras"])
class TrainingList(APIView):
    required_scopes = {"POST": "generate"}
    parser_classes = [*api_settings.DEFAULT_PARSER_CLASSES, MultiPartParser, FormParser]

    @extend_schema(summary="Your LoRA trainings, newest first", operation_id="api_v1_lora_trainings_list", responses={200: TrainingPage})
    def get(self, request):
        trainings = LoraTraining.objects.filter(owner=request.user).select_related("lora")
        page = self.paginator.paginate_queryset(trainings, request, view=self)
        return self.paginator.get_paginated_response([training_data(request, t) for t in page])

    @property
    def paginator(self):
        if not hasattr(self, "_paginator"):
            self._paginator = api_settings.DEFAULT_PAGINATION_CLASS()
        return self._paginator

    @extend_schema(summary="Train a LoRA", request={"application/json": TrainingRequest,
                                                     "multipart/form-data": TrainingUpload},
                   responses={202: Training},
                   description="Queues a training on the `training` queue and answers 202 at once. Images come "
                               "from one of your albums (`album`) or a zip (`images`, multipart). Follow it at "
                               "`websocket_url` or poll it until `status` is succeeded (then `lora` names the "
                               "new LoRA), failed or cancelled. Needs the generate scope.")
    def post(self, request):
        body = request.data
        if isinstance(body, QueryDict):
            fields = {key: body.get(key) for key in FIELDS if key in body}
        elif isinstance(body, dict):
            fields = {key: body[key] for key in FIELDS if key in body}
        else:
            raise ValidationError({"__all__": "The body must be a JSON object of training fields."})
        upload = request.FILES.get("images") if hasattr(request, "FILES") else None
        if upload is None and "images" in body:
            raise ValidationError({"images": "send the zip as a file part (multipart/form-data)"})
        training = submit_training(request.user, fields, upload)
        data = training_data(request, training)
        return Response(data, status=202, headers={"Location": request.build_absolute_uri(data["url"])})


@extend_schema(tags=["loras"], summary="One LoRA training: state, loss curve, samples, result",
               responses={200: Training})
class TrainingDetail(APIView):
    def get(self, request, pk):
        training = get_object_or_404(LoraTraining.objects.visible_to(request.user).select_related("lora"), pk=pk)
        return Response(training_data(request, training))


@extend_schema(tags=["loras"], summary="Cancel a LoRA training", request=None, responses={200: Training},
               description="A queued training is cancelled at once; a running one stops after its current step.")
class TrainingCancel(APIView):
    required_scopes = {"POST": "generate"}

    def post(self, request, pk):
        training = get_object_or_404(LoraTraining.objects.visible_to(request.user), pk=pk)
        if not can_manage(request.user, training):
            raise Http404
        return Response(training_data(request, cancel_training(training)))
