"""The Django admin for galleries and moderation.

Moderation changes made here go through `gallery.moderation` like the staff pages, so each is in
the audit log: bulk actions as "bulk", single edits as "admin". The audit log itself is read-only.
"""

from django import forms
from django.apps import apps
from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import ValidationError

from gallery import loras as loras_service
from gallery import moderation
from gallery.models import Album, AlbumItem, Image, Like, Lora, Report
from gallery.moderation_models import (AuditEntry, BlocklistEntry, FlaggedPrompt, OutputReview, StaffNote,
                                       Suspension)
from generation.admission import Refusal

Via = AuditEntry.Via
User = get_user_model()


class ReasonActionForm(helpers.ActionForm):
    """The admin's action bar with a reason box: bulk hides and suspensions need one."""

    reason = forms.CharField(required=False, max_length=2000,
                             widget=forms.TextInput(attrs={"placeholder": "Reason (shown to owners when hiding)"}))


def action_reason(request) -> str:
    return request.POST.get("reason", "").strip()


def report_outcome(modeladmin, request, done: int, noun: str, errors: list[str]) -> None:
    if done:
        modeladmin.message_user(request, f"{done} {noun}{'s' if done != 1 else ''} done; recorded in the audit log.",
                                messages.SUCCESS)
    for error in errors:
        modeladmin.message_user(request, error, messages.ERROR)


# --- Images ----------------------------------------------------------------------------------------

@admin.register(Image)
class ImageAdmin(admin.ModelAdmin):
    list_display = ("id", "owner", "prompt", "visibility", "saved", "hidden", "hidden_reason", "like_count",
                    "created_at")
    list_filter = ("visibility", "saved", "hidden", "model", "output_review__status")
    search_fields = ("prompt", "owner__username", "hidden_reason")
    raw_id_fields = ("owner", "generation")
    date_hierarchy = "created_at"
    action_form = ReasonActionForm
    actions = ["hide_selected", "unhide_selected", "suspend_owners"]

    @admin.action(description="Hide selected images (give a reason)")
    def hide_selected(self, request, queryset):
        reason = action_reason(request)
        if not reason:
            self.message_user(request, "Type a reason next to the action: owners see it.", messages.ERROR)
            return
        done = 0
        for image in queryset.select_related("owner"):
            moderation.hide_image(image, request.user, reason, via=Via.BULK)
            done += 1
        report_outcome(self, request, done, "hidden image", [])

    @admin.action(description="Unhide selected images")
    def unhide_selected(self, request, queryset):
        done = 0
        for image in queryset.filter(hidden=True).select_related("owner"):
            moderation.unhide_image(image, request.user, action_reason(request), via=Via.BULK)
            done += 1
        report_outcome(self, request, done, "unhidden image", [])

    @admin.action(description="Suspend the owners of the selected images (give a reason)")
    def suspend_owners(self, request, queryset):
        owners = User.objects.filter(pk__in=queryset.values("owner_id"))
        suspend_people(self, request, owners)

    def save_model(self, request, obj, form, change):
        """Hiding, unhiding or changing the reason in the change form is a moderation action like any other."""
        if change and {"hidden", "hidden_reason"} & set(form.changed_data):
            hidden, reason = obj.hidden, obj.hidden_reason
            before = Image.objects.values("hidden", "hidden_reason").get(pk=obj.pk)
            obj.hidden, obj.hidden_reason = before["hidden"], before["hidden_reason"]
            super().save_model(request, obj, form, change)  # whatever else the form changed
            try:
                if hidden:
                    moderation.hide_image(obj, request.user, reason, via=Via.ADMIN)
                elif before["hidden"]:
                    moderation.unhide_image(obj, request.user, "", via=Via.ADMIN)
            except Refusal as error:
                self.message_user(request, str(error), messages.ERROR)
            return
        super().save_model(request, obj, form, change)

    def delete_model(self, request, obj):
        moderation.delete_image(obj, request.user, "Deleted in the admin", via=Via.ADMIN)

    def delete_queryset(self, request, queryset):
        for image in queryset.select_related("owner"):
            moderation.delete_image(image, request.user, "Deleted in the admin (bulk)", via=Via.BULK)


class AlbumItemInline(admin.TabularInline):
    model = AlbumItem
    raw_id_fields = ("image",)
    extra = 0


@admin.register(Album)
class AlbumAdmin(admin.ModelAdmin):
    list_display = ("id", "title", "owner", "visibility", "updated_at")
    list_filter = ("visibility",)
    search_fields = ("title", "description", "owner__username")
    raw_id_fields = ("owner", "cover")
    inlines = [AlbumItemInline]


@admin.register(AlbumItem)
class AlbumItemAdmin(admin.ModelAdmin):
    list_display = ("id", "album", "image", "position", "added_at")
    search_fields = ("album__title", "album__owner__username")
    raw_id_fields = ("album", "image")


@admin.register(Like)
class LikeAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "image", "created_at")
    search_fields = ("user__username",)
    raw_id_fields = ("user", "image")


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ("id", "image", "lora", "reporter", "reason", "status", "created_at", "resolved_at")
    list_filter = ("status", "reason")
    search_fields = ("text", "reporter__username", "image__prompt", "image__owner__username", "lora__name")
    raw_id_fields = ("reporter", "image", "lora")
    readonly_fields = ("status", "resolved_at")
    action_form = ReasonActionForm
    actions = ["dismiss_selected", "hide_reported_images"]

    @admin.action(description="Dismiss the open reports of the selected reports' images")
    def dismiss_selected(self, request, queryset):
        images = Image.objects.filter(pk__in=queryset.filter(status=Report.Status.OPEN).values("image_id"))
        done = 0
        for image in images.select_related("owner"):
            moderation.dismiss_reports(image, request.user, action_reason(request), via=Via.BULK)
            done += 1
        report_outcome(self, request, done, "image whose reports were dismissed", [])

    @admin.action(description="Hide the reported images (give a reason)")
    def hide_reported_images(self, request, queryset):
        reason = action_reason(request)
        if not reason:
            self.message_user(request, "Type a reason next to the action: owners see it.", messages.ERROR)
            return
        done = 0
        for image in Image.objects.filter(pk__in=queryset.values("image_id")).select_related("owner"):
            moderation.hide_image(image, request.user, reason, via=Via.BULK)
            done += 1
        report_outcome(self, request, done, "hidden image", [])


# --- People ----------------------------------------------------------------------------------------

def suspend_people(modeladmin, request, people):
    reason = action_reason(request)
    if not reason:
        modeladmin.message_user(request, "Type a reason next to the action.", messages.ERROR)
        return
    done, errors = 0, []
    for person in people:
        try:
            moderation.suspend(person, request.user, reason, via=Via.BULK)
            done += 1
        except Refusal as error:
            errors.append(str(error))
    report_outcome(modeladmin, request, done, "suspension", errors)


class ModeratedUserAdmin(UserAdmin):
    """Django's user admin, with suspension: a change of "active" suspends or unsuspends properly
    (jobs cancelled, public content hidden and later restored), and bulk actions for both."""

    list_display = ("username", "email", "is_active", "is_staff", "date_joined", "last_login")
    action_form = ReasonActionForm
    actions = ["suspend_selected", "unsuspend_selected"]

    @admin.action(description="Suspend selected people (give a reason)")
    def suspend_selected(self, request, queryset):
        suspend_people(self, request, queryset)

    @admin.action(description="Unsuspend selected people")
    def unsuspend_selected(self, request, queryset):
        done, errors = 0, []
        for person in queryset:
            try:
                moderation.unsuspend(person, request.user, action_reason(request), via=Via.BULK)
                done += 1
            except Refusal as error:
                errors.append(str(error))
        report_outcome(self, request, done, "unsuspension", errors)

    def save_model(self, request, obj, form, change):
        if change and "is_active" in form.changed_data:
            active = obj.is_active
            obj.is_active = not active
            super().save_model(request, obj, form, change)
            try:
                if active:
                    moderation.unsuspend(obj, request.user, "Reactivated in the admin", via=Via.ADMIN)
                else:
                    moderation.suspend(obj, request.user, "Deactivated in the admin", via=Via.ADMIN)
            except Refusal as error:
                self.message_user(request, str(error), messages.ERROR)
            return
        super().save_model(request, obj, form, change)


if admin.site.is_registered(User):
    admin.site.unregister(User)
admin.site.register(User, ModeratedUserAdmin)


@admin.register(Suspension)
class SuspensionAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "reason", "suspended_by", "created_at", "lifted_at", "lifted_by",
                    "cancelled_jobs")
    list_filter = ("lifted_at",)
    search_fields = ("user__username", "reason")
    readonly_fields = [field.name for field in Suspension._meta.fields] + ["hidden_images"]
    action_form = ReasonActionForm
    actions = ["lift_selected"]

    def has_add_permission(self, request):
        return False  # suspend from a person's page or the user list, so everything a suspension does happens

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.action(description="Lift the selected suspensions")
    def lift_selected(self, request, queryset):
        done, errors = 0, []
        for suspension in queryset.filter(lifted_at__isnull=True).select_related("user"):
            try:
                moderation.unsuspend(suspension.user, request.user, action_reason(request), via=Via.BULK)
                done += 1
            except Refusal as error:
                errors.append(str(error))
        report_outcome(self, request, done, "lifted suspension", errors)


@admin.register(StaffNote)
class StaffNoteAdmin(admin.ModelAdmin):
    list_display = ("id", "subject", "author", "text", "image", "created_at")
    search_fields = ("text", "subject__username", "author__username")
    raw_id_fields = ("subject", "image")
    readonly_fields = ("author", "created_at")

    def get_readonly_fields(self, request, obj=None):
        return ("subject", "image", "text", "author", "created_at") if obj else ("author", "created_at")

    def save_model(self, request, obj, form, change):
        if change:
            return  # notes are a record: add a new one instead of changing this
        note = moderation.add_note(obj.subject, request.user, obj.text, image=obj.image, via=Via.ADMIN)
        obj.pk = note.pk

    def has_delete_permission(self, request, obj=None):
        return False


# --- Blocklist and what it caught ------------------------------------------------------------------

class BlocklistEntryAdminForm(forms.ModelForm):
    class Meta:
        model = BlocklistEntry
        fields = ["pattern", "kind", "whole_word", "action", "check_negative_prompt", "enabled", "note"]


@admin.register(BlocklistEntry)
class BlocklistEntryAdmin(admin.ModelAdmin):
    form = BlocklistEntryAdminForm  # the model's clean() refuses bad or slow patterns with a message
    list_display = ("pattern", "kind", "whole_word", "action", "check_negative_prompt", "enabled", "note",
                    "created_by", "updated_at")
    list_filter = ("kind", "action", "enabled", "whole_word")
    search_fields = ("pattern", "note")

    def save_model(self, request, obj, form, change):
        try:
            moderation.save_blocklist_entry(obj, request.user, via=Via.ADMIN)
        except ValidationError as error:  # already validated by the form; kept for safety
            self.message_user(request, "; ".join(error.messages), messages.ERROR)

    def delete_model(self, request, obj):
        moderation.delete_blocklist_entry(obj, request.user, via=Via.ADMIN)

    def delete_queryset(self, request, queryset):
        for entry in queryset:
            moderation.delete_blocklist_entry(entry, request.user, via=Via.BULK)


@admin.register(FlaggedPrompt)
class FlaggedPromptAdmin(admin.ModelAdmin):
    list_display = ("id", "user", "prompt", "matched", "pattern", "status", "created_at")
    list_filter = ("status",)
    search_fields = ("prompt", "matched", "pattern", "user__username")
    readonly_fields = [field.name for field in FlaggedPrompt._meta.fields]
    action_form = ReasonActionForm
    actions = ["dismiss_selected"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Dismiss the selected flagged prompts")
    def dismiss_selected(self, request, queryset):
        done = 0
        for flagged in queryset.filter(status=FlaggedPrompt.Status.OPEN).select_related("user"):
            moderation.dismiss_flagged(flagged, request.user, action_reason(request), via=Via.BULK)
            done += 1
        report_outcome(self, request, done, "dismissed flagged prompt", [])


@admin.register(OutputReview)
class OutputReviewAdmin(admin.ModelAdmin):
    list_display = ("id", "image", "outcome", "check_name", "status", "created_at", "resolved_by")
    list_filter = ("status", "outcome")
    search_fields = ("image__prompt", "image__owner__username", "detail")
    readonly_fields = [field.name for field in OutputReview._meta.fields]
    action_form = ReasonActionForm
    actions = ["release_selected"]

    def has_add_permission(self, request):
        return False

    @admin.action(description="Release the selected held images (the check was wrong)")
    def release_selected(self, request, queryset):
        done = 0
        for review in queryset.filter(status=OutputReview.Status.PENDING).select_related("image__owner"):
            moderation.clear_review(review.image, request.user, action_reason(request), via=Via.BULK)
            done += 1
        report_outcome(self, request, done, "released image", [])


# --- The audit log: read-only ----------------------------------------------------------------------

@admin.register(AuditEntry)
class AuditEntryAdmin(admin.ModelAdmin):
    list_display = ("created_at", "actor_name", "action", "target_label", "subject_name", "reason", "via")
    list_filter = ("action", "via", "target_type")
    search_fields = ("actor_name", "subject_name", "target_label", "reason")
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in AuditEntry._meta.fields]
    actions = None

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


# --- Generation models no other admin module registered ---------------------------------------------
#
# generation/admin.py is loaded before this module (INSTALLED_APPS order), so whatever it registers
# is left alone; these are fallbacks for models it does not register.

def fallback_admin(model) -> type[admin.ModelAdmin]:
    """A plain list of the model's first columns, filters on its flags and choices, search on its text."""
    fields = [field for field in model._meta.concrete_fields if not field.many_to_many]
    return type(f"{model.__name__}Admin", (admin.ModelAdmin,), {
        "list_display": [field.name for field in fields[:8]],
        "list_filter": [field.name for field in fields if field.choices or field.get_internal_type() == "BooleanField"],
        "search_fields": [field.name for field in fields
                          if field.get_internal_type() in ("CharField", "SlugField") and not field.choices][:4],
    })


for app_label in ("generation",):
    for unregistered in apps.get_app_config(app_label).get_models():
        if not admin.site.is_registered(unregistered):
            admin.site.register(unregistered, fallback_admin(unregistered))


@admin.register(Lora)
class LoraAdmin(admin.ModelAdmin):
    """LoRAs: staff hide one (nobody but its owner may then see, use or download it) with a
    reason, recorded in the audit log; the file itself is not edited here."""

    list_display = ["name", "owner", "base_model", "visibility", "hidden", "rank", "file_size", "created_at"]
    list_filter = ["visibility", "hidden", "base_model"]
    search_fields = ["name", "description", "trigger_words", "owner__username"]
    raw_id_fields = ["owner"]
    readonly_fields = ["owner", "base_model", "file", "file_hash", "file_size", "key_format", "rank", "alpha",
                       "layer_count", "training", "hidden", "hidden_reason", "created_at"]
    action_form = ReasonActionForm
    actions = ["hide_loras", "unhide_loras"]

    def has_add_permission(self, request):
        return False  # uploaded on the LoRAs page or through the API, where the file is checked

    @admin.action(description="Hide selected LoRAs (nobody but the owner may see or use them)")
    def hide_loras(self, request, queryset):
        for lora in queryset:
            loras_service.set_hidden(lora, True, request.user, action_reason(request), via=Via.BULK)
        report_outcome(self, request, queryset.count(), "LoRA hide", [])

    @admin.action(description="Unhide selected LoRAs")
    def unhide_loras(self, request, queryset):
        for lora in queryset:
            loras_service.set_hidden(lora, False, request.user, action_reason(request), via=Via.BULK)
        report_outcome(self, request, queryset.count(), "LoRA unhide", [])
