"""REST API routes: /api/v1/ (ldmsite's own), /api/schema/ and /api/docs/, and /sdapi/v1/ (A1111).

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
]

sdapi = [
    path("txt2img", a1111.Txt2Img.as_view(**A1111_AUTHENTICATION), name="a1111-txt2img"),
    path("progress", a1111.Progress.as_view(**A1111_AUTHENTICATION), name="a1111-progress"),
    path("interrupt", a1111.Interrupt.as_view(**A1111_AUTHENTICATION), name="a1111-interrupt"),
    path("sd-models", a1111.SdModels.as_view(**A1111_AUTHENTICATION), name="a1111-sd-models"),
    path("samplers", a1111.Samplers.as_view(**A1111_AUTHENTICATION), name="a1111-samplers"),
    path("schedulers", a1111.Schedulers.as_view(**A1111_AUTHENTICATION), name="a1111-schedulers"),
    path("options", a1111.Options.as_view(**A1111_AUTHENTICATION), name="a1111-options"),
]

urlpatterns = [
    *[path(f"api/v1/{p.pattern}", p.callback, name=p.name) for p in v1],
    *[path(f"sdapi/v1/{p.pattern}", p.callback, name=p.name) for p in sdapi],
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="api:schema"), name="docs"),
]


@csrf_exempt  # a 404 either way; a CSRF refusal would be an HTML page
def no_such_endpoint(request):
    """API clients get JSON, not the site's HTML 404 page."""
    detail = "No such API endpoint; see /api/docs/."
    if not request.path.endswith("/"):
        try:
            match = resolve(request.path + "/")
        except Resolver404:
            match = None
        if match is not None and match.url_name != "no-such-endpoint":
            detail = f"No such API endpoint; did you mean {request.path}/ (with the slash)?"
    return JsonResponse({"detail": detail}, status=404)


urlpatterns.append(re_path(r"^(?:api|sdapi)/", no_such_endpoint, name="no-such-endpoint"))
