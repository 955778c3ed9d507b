import mimetypes

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.http import FileResponse, Http404, JsonResponse
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from gallery.models import Image

HISTORY_PAGE_SIZE = 24


def visible_image(request, pk) -> Image:
    """The image if this person may see it; otherwise 404, so nothing leaks that it exists."""
    image = Image.objects.select_related("owner", "model", "generation").filter(pk=pk).first()
    if image is None or not image.can_view(request.user):
        raise Http404("No such image")
    return image


@login_required
def history(request):
    images = Image.objects.filter(owner=request.user).select_related("model")
    page = Paginator(images, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "gallery/history.html", {"page": page})


def image_page(request, pk):
    image = visible_image(request, pk)
    return render(request, "gallery/image.html", {"image": image, "can_edit": image.can_edit(request.user)})


def serve(stored, download_name: str | None = None) -> FileResponse:
    content_type = mimetypes.guess_type(stored.name)[0] or "application/octet-stream"
    response = FileResponse(stored.open("rb"), content_type=content_type,
                            as_attachment=download_name is not None, filename=download_name)
    response["X-Content-Type-Options"] = "nosniff"
    response["Cache-Control"] = "private, max-age=3600"
    return response


def image_file(request, pk):
    image = visible_image(request, pk)
    download = f"ldmsite-{image.pk}-{image.seed}.png" if "download" in request.GET else None
    return serve(image.file, download)


def image_thumbnail(request, pk):
    image = visible_image(request, pk)
    return serve(image.thumbnail or image.file)


@login_required
@require_POST
def save_image(request, pk):
    image = visible_image(request, pk)
    if not image.can_edit(request.user):
        raise Http404("No such image")
    image.saved = request.POST.get("saved", "true") != "false"
    image.save(update_fields=["saved"])
    if "application/json" in request.headers.get("Accept", ""):
        return JsonResponse({"id": image.pk, "saved": image.saved})
    next_url = request.POST.get("next", "")
    if url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()}):
        return redirect(next_url)
    return redirect(image)
