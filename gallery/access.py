"""Looking up an image or album for a person: one rule for pages and the API.

Something a person may not see is a 404, so nothing leaks that it exists; something they
may see but not change is a 403. The rules themselves are the models' `can_view` and
`can_edit`.
"""

from django.core.exceptions import PermissionDenied
from django.http import Http404


def viewable(queryset, pk, user):
    found = queryset.filter(pk=pk).first()
    if found is None or not found.can_view(user):
        raise Http404(f"No such {queryset.model._meta.verbose_name}.")
    return found


def editable(queryset, pk, user):
    found = viewable(queryset, pk, user)
    if not found.can_edit(user):
        raise PermissionDenied(f"Only the {queryset.model._meta.verbose_name}'s owner may change it.")
    return found
