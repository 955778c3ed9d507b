"""The site navigation, offered to every template.

Each entry names a URL; an entry whose page is not installed is left out, so
the menu only ever links to pages that exist.
"""

from django.urls import NoReverseMatch, reverse

from gallery.models import Image

NAVIGATION = (
    # (label, url name, who sees it)
    ("Generate", "generation:generate", "user"),
    ("My images", "gallery:history", "user"),
    ("Explore", "gallery:explore", "everyone"),
    ("API tokens", "accounts:tokens", "user"),
    ("Moderation", "moderation:queue", "staff"),
)


def navigation(request):
    user = getattr(request, "user", None)
    signed_in = bool(user and user.is_authenticated)
    staff = bool(signed_in and user.is_staff)
    items = []
    for label, url_name, audience in NAVIGATION:
        if (audience == "user" and not signed_in) or (audience == "staff" and not staff):
            continue
        try:
            url = reverse(url_name)
        except NoReverseMatch:
            continue
        items.append({"label": label, "url": url, "active": is_active(request, url_name, url)})
    return {"nav_items": items}


def is_active(request, url_name: str, url: str) -> bool:
    """An entry is current on its own pages; an image's page is under "My images" only for its owner."""
    match = getattr(request, "resolver_match", None)
    if url_name == "gallery:history" and match is not None and match.view_name == "gallery:image":
        user = request.user
        return bool(user.is_authenticated
                    and Image.objects.filter(pk=match.kwargs.get("pk"), owner_id=user.pk).exists())
    return request.path.startswith(url)
