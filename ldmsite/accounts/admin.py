from django.contrib import admin

from ldmsite.accounts.models import AccessToken, Profile


@admin.register(AccessToken)
class AccessTokenAdmin(admin.ModelAdmin):
    list_display = ("name", "user", "prefix", "scopes", "created_at", "expires_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("name", "prefix", "user__username")
    readonly_fields = ("user", "prefix", "digest", "created_at", "last_used_at")

    def has_add_permission(self, request):
        return False  # a token is only useful to the person shown it once: they make their own


@admin.register(Profile)
class ProfileAdmin(admin.ModelAdmin):
    list_display = ("user", "bio", "updated_at")
    search_fields = ("user__username", "bio")
    readonly_fields = ("user", "updated_at")
