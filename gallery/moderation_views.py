"""Staff moderation pages: the review queue, an image's and a person's review pages, their actions,
the audit log and the prompt blocklist; plus a signed-in person's own reports.

Thin: every action is a function in `gallery.moderation`, which writes the audit entry. Everything
but "my reports" is for active staff only; anyone else gets 403.
"""

from functools import wraps

from django import forms
from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.db.models import Prefetch, Q
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from gallery import moderation
from gallery.models import Image, Lora, Report
from gallery.moderation_models import AuditEntry, BlocklistEntry, FlaggedPrompt, OutputReview, StaffNote
from gallery.views import back
from generation.admission import Refusal
from generation.forms import form_id

QUEUE_PAGE_SIZE = 20
AUDIT_PAGE_SIZE = 50
HISTORY_LENGTH = 30
QUEUE_TABS = ("reports", "loras", "held", "flagged")


def staff_only(view):
    """Active staff only; everyone else, signed in or not, gets 403."""

    @wraps(view)
    def wrapper(request, *args, **kwargs):
        user = request.user
        if not (user.is_authenticated and user.is_active and user.is_staff):
            raise PermissionDenied("Staff only.")
        return view(request, *args, **kwargs)

    return wrapper


def person_context(person) -> dict:
    """What a moderator should know about a person before acting on their content."""
    return {
        "person": person,
        "suspension": moderation.active_suspension(person),
        "history": moderation.history_of(person)[:HISTORY_LENGTH],
        "notes": StaffNote.objects.filter(subject=person).select_related("author", "image")[:HISTORY_LENGTH],
        "image_count": Image.objects.filter(owner=person).count(),
        "reports_against": Report.objects.filter(image__owner=person).count(),
        "flagged_count": FlaggedPrompt.objects.filter(user=person).count(),
    }


# --- The review queue ---------------------------------------------------------------------------

@staff_only
def queue(request):
    tab = request.GET.get("tab", "reports")
    tab = tab if tab in QUEUE_TABS else "reports"
    order = "most_reported" if request.GET.get("order") == "most_reported" else "newest"
    counts = {
        "reports": Image.objects.filter(reports__status=Report.Status.OPEN).distinct().count(),
        "held": OutputReview.objects.filter(status=OutputReview.Status.PENDING).count(),
        "flagged": FlaggedPrompt.objects.filter(status=FlaggedPrompt.Status.OPEN).count(),
        "loras": Lora.objects.filter(reports__status=Report.Status.OPEN).distinct().count(),
    }
    open_reports = Report.objects.filter(status=Report.Status.OPEN).select_related("reporter")
    if tab == "reports":
        items = moderation.reported_images(order).prefetch_related(
            Prefetch("reports", queryset=open_reports, to_attr="open_report_list"))
    elif tab == "loras":
        items = moderation.reported_loras(order).prefetch_related(
            Prefetch("reports", queryset=open_reports, to_attr="open_report_list"))
    elif tab == "held":
        items = (OutputReview.objects.filter(status=OutputReview.Status.PENDING)
                 .select_related("image", "image__owner").order_by("-created_at", "-id"))
    else:
        items = (FlaggedPrompt.objects.filter(status=FlaggedPrompt.Status.OPEN)
                 .select_related("user").order_by("-created_at", "-id"))
    page = Paginator(items, QUEUE_PAGE_SIZE).get_page(request.GET.get("page"))
    if tab in ("reports", "loras"):
        for reported in page:
            reasons = {}
            for report in reported.open_report_list:
                reasons[report.get_reason_display()] = reasons.get(report.get_reason_display(), 0) + 1
            reported.reason_counts = sorted(reasons.items(), key=lambda pair: -pair[1])
    return render(request, "moderation/queue.html", {"tab": tab, "order": order, "page": page, "counts": counts})


# --- An image under review ------------------------------------------------------------------------

@staff_only
def image_review(request, pk):
    image = get_object_or_404(Image.objects.select_related("owner", "model"), pk=pk)
    context = person_context(image.owner)
    context.update({
        "image": image,
        "reports": image.reports.select_related("reporter"),
        "open_reports": image.reports.filter(status=Report.Status.OPEN).count(),
        "review": OutputReview.objects.filter(image=image).first(),
        "image_history": AuditEntry.objects.filter(target_type="image", target_id=image.pk).select_related("actor"),
    })
    return render(request, "moderation/image.html", context)


def image_action(action):
    """POST-only staff view running `action(request, image)`; a refusal becomes a message."""

    @staff_only
    @require_POST
    @wraps(action)
    def view(request, pk):
        image = get_object_or_404(Image.objects.select_related("owner"), pk=pk)
        try:
            response = action(request, image)
        except Refusal as error:
            messages.error(request, str(error))
            return back(request, reverse("moderation:image", args=[pk]))
        return response or back(request, reverse("moderation:image", args=[pk]))

    return view


@image_action
def hide(request, image):
    moderation.hide_image(image, request.user, request.POST.get("reason", ""))
    messages.success(request, f"Image {image.pk} is hidden. Its owner sees the reason; the file is kept.")


@image_action
def unhide(request, image):
    moderation.unhide_image(image, request.user, request.POST.get("reason", ""))
    messages.success(request, f"Image {image.pk} is visible again.")


@image_action
def delete(request, image):
    pk = image.pk
    moderation.delete_image(image, request.user, request.POST.get("reason", ""))
    messages.success(request, f"Image {pk} and its files are deleted.")
    return redirect("moderation:queue")


@image_action
def dismiss(request, image):
    count = moderation.dismiss_reports(image, request.user, request.POST.get("reason", ""))
    messages.success(request, f"Dismissed {count} report{'s' if count != 1 else ''} about image {image.pk}.")
    return back(request, "moderation:queue")


@image_action
def clear(request, image):
    moderation.clear_review(image, request.user, request.POST.get("reason", ""))
    messages.success(request, f"Image {image.pk} is released: its owner may publish it.")
    return back(request, reverse("moderation:queue") + "?tab=held")


# --- A reported LoRA (acted on from the queue's LoRA tab) ---------------------------------------------

def lora_action(action):
    """POST-only staff view running `action(request, lora)`; a refusal becomes a message. Back to
    the page it came from (the queue's LoRA tab by default)."""

    @staff_only
    @require_POST
    @wraps(action)
    def view(request, pk):
        lora = get_object_or_404(Lora.objects.select_related("owner"), pk=pk)
        try:
            action(request, lora)
        except Refusal as error:
            messages.error(request, str(error))
        return back(request, reverse("moderation:queue") + "?tab=loras")

    return view


@lora_action
def hide_lora(request, lora):
    moderation.hide_lora(lora, request.user, request.POST.get("reason", ""))
    messages.success(request, f"LoRA {lora.qualified_name} is hidden: only its owner may see or use it.")


@lora_action
def unhide_lora(request, lora):
    moderation.unhide_lora(lora, request.user, request.POST.get("reason", ""))
    messages.success(request, f"LoRA {lora.qualified_name} is visible again.")


@lora_action
def dismiss_lora(request, lora):
    count = moderation.dismiss_reports(lora, request.user, request.POST.get("reason", ""))
    messages.success(request, f"Dismissed {count} report{'s' if count != 1 else ''} about LoRA {lora.qualified_name}.")


# --- People ------------------------------------------------------------------------------------------

def get_person(username):
    return get_object_or_404(get_user_model(), username=username)


@staff_only
def person(request, username):
    someone = get_person(username)
    context = person_context(someone)
    context.update({
        "images": Image.objects.filter(owner=someone).select_related("model")[:24],
        "flagged": FlaggedPrompt.objects.filter(user=someone)[:HISTORY_LENGTH],
        "suspensions": someone.suspensions.select_related("suspended_by", "lifted_by"),
    })
    return render(request, "moderation/person.html", context)


def person_action(action):
    @staff_only
    @require_POST
    @wraps(action)
    def view(request, username):
        someone = get_person(username)
        try:
            action(request, someone)
        except Refusal as error:
            messages.error(request, str(error))
        return back(request, reverse("moderation:person", args=[someone.username]))

    return view


@person_action
def suspend(request, someone):
    suspension = moderation.suspend(someone, request.user, request.POST.get("reason", ""))
    messages.success(request, f"{someone.username} is suspended: {suspension.hidden_images.count()} images hidden, "
                              f"{suspension.cancelled_jobs} jobs cancelled.")


@person_action
def unsuspend(request, someone):
    moderation.unsuspend(someone, request.user, request.POST.get("reason", ""))
    messages.success(request, f"{someone.username} may sign in again; what the suspension hid is back.")


@person_action
def note(request, someone):
    image = None
    image_id = form_id(request.POST.get("image"), "image")
    if image_id is not None:
        image = Image.objects.filter(pk=image_id, owner=someone).first()
    moderation.add_note(someone, request.user, request.POST.get("text", ""), image=image)
    messages.success(request, "Note added.")


@staff_only
@require_POST
def dismiss_flagged(request, pk):
    flagged = get_object_or_404(FlaggedPrompt, pk=pk)
    moderation.dismiss_flagged(flagged, request.user, request.POST.get("reason", ""))
    messages.success(request, "Flagged prompt dismissed.")
    return back(request, reverse("moderation:queue") + "?tab=flagged")


# --- The audit log ---------------------------------------------------------------------------------

@staff_only
def audit_log(request):
    entries = AuditEntry.objects.select_related("actor", "subject")
    action = request.GET.get("action", "")
    if action in AuditEntry.Action.values:
        entries = entries.filter(action=action)
    via = request.GET.get("via", "")
    if via in AuditEntry.Via.values:
        entries = entries.filter(via=via)
    who = request.GET.get("person", "").strip()[:150]
    if who:
        entries = entries.filter(Q(subject_name=who) | Q(actor_name=who))
    page = Paginator(entries, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    return render(request, "moderation/audit.html", {
        "page": page, "actions": AuditEntry.Action.choices, "vias": AuditEntry.Via.choices,
        "action": action, "via": via, "who": who,
    })


# --- The prompt blocklist --------------------------------------------------------------------------

class BlocklistEntryForm(forms.ModelForm):
    class Meta:
        model = BlocklistEntry
        fields = ["pattern", "kind", "whole_word", "action", "check_negative_prompt", "enabled", "note"]
        labels = {"check_negative_prompt": "Check negative prompts too", "whole_word": "Whole words only"}


def save_entry_form(request, form) -> bool:
    if not form.is_valid():
        return False
    try:
        moderation.save_blocklist_entry(form.instance, request.user)
    except ValidationError as error:
        form.add_error(None, error)
        return False
    return True


@staff_only
def blocklist(request):
    form = BlocklistEntryForm(request.POST or None)
    if request.method == "POST" and save_entry_form(request, form):
        messages.success(request, f"Added {form.instance.pattern!r} to the blocklist.")
        return redirect("moderation:blocklist")
    entries = BlocklistEntry.objects.select_related("created_by")
    return render(request, "moderation/blocklist.html", {"form": form, "entries": entries},
                  status=400 if form.errors else 200)


@staff_only
def blocklist_entry(request, pk):
    entry = get_object_or_404(BlocklistEntry, pk=pk)
    form = BlocklistEntryForm(request.POST or None, instance=entry)
    if request.method == "POST" and save_entry_form(request, form):
        messages.success(request, f"Saved {entry.pattern!r}.")
        return redirect("moderation:blocklist")
    return render(request, "moderation/blocklist_entry.html", {"form": form, "entry": entry},
                  status=400 if form.errors else 200)


@staff_only
@require_POST
def blocklist_delete(request, pk):
    entry = get_object_or_404(BlocklistEntry, pk=pk)
    pattern = entry.pattern
    moderation.delete_blocklist_entry(entry, request.user)
    messages.success(request, f"Removed {pattern!r} from the blocklist.")
    return redirect("moderation:blocklist")


# --- A person's own reports --------------------------------------------------------------------------

@login_required
def my_reports(request):
    """The reports this person made and what became of them (open, dismissed, actioned)."""
    reports = Report.objects.filter(reporter=request.user).select_related("image", "image__owner", "lora",
                                                                          "lora__owner")
    page = Paginator(reports, AUDIT_PAGE_SIZE).get_page(request.GET.get("page"))
    for report in page:
        report.viewable = report.target.can_view(request.user)
    return render(request, "moderation/my_reports.html", {"page": page})
