from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from ldmsite import views

admin.site.site_header = "ldmsite administration"
admin.site.site_title = "ldmsite admin"
admin.site.index_title = "Site administration"
admin.site.site_url = "/"

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Password reset by email, Django's own views under their own names (so the admin's "Forgotten your
    # password?" link and Django's email template work); templates in templates/registration/.
    path("accounts/password-reset/", auth_views.PasswordResetView.as_view(
        email_template_name="registration/password_reset_email.txt",
        subject_template_name="registration/password_reset_subject.txt"), name="password_reset"),
    path("accounts/password-reset/done/", auth_views.PasswordResetDoneView.as_view(), name="password_reset_done"),
    path("accounts/reset/<uidb64>/<token>/", auth_views.PasswordResetConfirmView.as_view(),
         name="password_reset_confirm"),
    path("accounts/reset/done/", auth_views.PasswordResetCompleteView.as_view(), name="password_reset_complete"),
    path("accounts/", include("ldmsite.accounts.urls")),
    path("", include("generation.urls")),
    path("", include("gallery.urls")),
    path("", include("ldmsite.api.urls")),
    path("moderation/", include("gallery.moderation_urls")),
    path("admin/", admin.site.urls),
]
