from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from ldmsite import views

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("accounts/login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("accounts/", include("ldmsite.accounts.urls")),
    path("", include("generation.urls")),
    path("", include("gallery.urls")),
    path("", include("ldmsite.api.urls")),
    path("moderation/", include("gallery.moderation_urls")),
    path("admin/", admin.site.urls),
]
