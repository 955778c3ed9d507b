"""REST API routes: /api/v1/ (ldmsite's own), /api/schema/ and /api/docs/, /sdapi/v1/ and two of
/internal/ (A1111).

See docs/API.md. Object ids in paths are at most 18 digits, so an absurd id is a 404
rather than a database overflow.
"""

from django.http import JsonResponse
from django.urls import Resolver404, path, re_path, register_converter, resolve
from django.views.decorators.csrf import csrf_exempt
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from gallery import api as gallery_api
from generation import a1111
from generation import api as generation_api
from generation import training_api
from ldmsite.api.authentication import BasicTokenAuthentication, BearerTokenAuthentication

# Most A1111 clients can send a token only as a Basic-auth password; no browser session here.
A1111_AUTHENTICATION = {"authentication_classes": [BasicTokenAuthentication, BearerTokenAuthentication]}


class IdConverter:
    regex = "[0-9]{1,18}"

    def to_python(self, value):
        return int(value)

    def to_url(self, value):
        return str(value)


register_converter(IdConverter, "id")

app_name = "api"

v1 = [
    path("me/", generation_api.Me.as_view(), name="me"),
    path("models/", generation_api.ModelList.as_view(), name="model-list"),
    path("models/<slug:slug>/", generation_api.ModelDetail.as_view(), name="model-detail"),
    path("generations/", generation_api.GenerationList.as_view(), name="generation-list"),
    path("generations/<id:pk>/", generation_api.GenerationDetail.as_view(), name="generation-detail"),
    path("generations/<id:pk>/cancel/", generation_api.GenerationCancel.as_view(), name="generation-cancel"),
    path("generations/<id:pk>/source/<kind>/", generation_api.GenerationSource.as_view(), name="generation-source"),
    path("images/", gallery_api.ImageList.as_view(), name="image-list"),
    path("images/<id:pk>/", gallery_api.ImageDetail.as_view(), name="image-detail"),
    path("images/<id:pk>/file/", gallery_api.ImageFile.as_view(), name="image-file"),
    path("images/<id:pk>/like/", gallery_api.ImageLike.as_view(), name="image-like"),
    path("images/<id:pk>/report/", gallery_api.ImageReport.as_view(), name="image-report"),
    path("likes/", gallery_api.LikeList.as_view(), name="like-list"),
    path("reports/", gallery_api.ReportList.as_view(), name="report-list"),
    path("albums/", gallery_api.AlbumList.as_view(), name="album-list"),
    path("albums/<id:pk>/", gallery_api.AlbumDetail.as_view(), name="album-detail"),
    path("albums/<id:pk>/images/", gallery_api.AlbumImages.as_view(), name="album-images"),
    path("albums/<id:pk>/images/<id:image_id>/", gallery_api.AlbumImage.as_view(), name="album-image"),
    path("albums/<id:pk>/order/", gallery_api.AlbumOrder.as_view(), name="album-order"),
    path("explore/", gallery_api.Explore.as_view(), name="explore"),
    path("loras/", gallery_api.LoraList.as_view(), name="lora-list"),
    path("loras/<id:pk>/", gallery_api.LoraDetail.as_view(), name="lora-detail"),
    path("loras/<id:pk>/file/", gallery_api.LoraFile.as_view(), name="lora-file"),
    path("loras/<id:pk>/report/", gallery_api.LoraReport.as_view(), name="lora-report"),
    path("lora-trainings/", training_api.TrainingList.as_view(), name="lora-training-list"),
    path("lora-trainings/<id:pk>/", training_api.TrainingDetail.as_view(), name="lora-training-detail"),
    path("lora-trainings/<id:pk>/cancel/", training_api.TrainingCancel.as_view(), name="lora-training-cancel"),
]

# /sdapi/v1/<route>, named a1111-<route>.
A1111_ROUTES = {
    "txt2img": a1111.Txt2Img, "img2img": a1111.Img2Img, "progress": a1111.Progress, "interrupt": a1111.Interrupt,
    "skip": a1111.Skip,
    "options": a1111.Options, "sd-models": a1111.SdModels, "samplers": a1111.Samplers,
    "schedulers": a1111.Schedulers, "scripts": a1111.Scripts, "script-info": a1111.ScriptInfo,
    "upscalers": a1111.Upscalers, "latent-upscale-modes": a1111.LatentUpscaleModes, "loras": a1111.Loras,
    "embeddings": a1111.Embeddings, "prompt-styles": a1111.PromptStyles, "sd-vae": a1111.SdVae,
    "hypernetworks": a1111.Hypernetworks, "face-restorers": a1111.FaceRestorers,
    "realesrgan-models": a1111.RealesrganModels, "extensions": a1111.Extensions, "memory": a1111.Memory,
    "cmd-flags": a1111.CmdFlags, "png-info": a1111.PngInfo, "refresh-checkpoints": a1111.Refresh,
    "refresh-vae": a1111.Refresh, "refresh-loras": a1111.Refresh, "refresh-embeddings": a1111.Refresh,
}
sdapi = [path(route, view.as_view(**A1111_AUTHENTICATION), name=f"a1111-{route}")
         for route, view in A1111_ROUTES.items()]

# The A1111 web UI's own routes that clients call too.
internal = [
    path("ping", a1111.Ping.as_view(), name="a1111-internal-ping"),
    path("progress", a1111.InternalProgress.as_view(**A1111_AUTHENTICATION), name="a1111-internal-progress"),
]

urlpatterns = [
    *[path(f"api/v1/{p.pattern}", p.callback, name=p.name) for p in v1],
    *[path(f"sdapi/v1/{p.pattern}", p.callback, name=p.name) for p in sdapi],
    *[path(f"internal/{p.pattern}", p.callback, name=p.name) for p in internal],
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api:schema", template_name="api/docs.html"), name="docs"),
]


@csrf_exempt  # a 404 either way; a CSRF refusal would be an HTML page
def no_such_endpoint(request):
    """API clients get JSON, not the site's HTML 404 page; A1111 clients get A1111's (FastAPI's) 404."""
    if request.path.startswith(("/sdapi/", "/internal/")):
        return JsonResponse({"detail": "Not Found"}, status=404)
    detail = "No such API endpoint; see /api/docs/."
    if not request.path.endswith("/"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.url_name != "no-such-endpoint":
            detail = f"No such API endpoint; did you mean {request.path}/ (with the slash)?"
    return JsonResponse({"detail": detail}, status=404)


urlpatterns.append(re_path(r"^(?:api|sdapi|internal)/", no_such_endpoint, name="no-such-endpoint"))
