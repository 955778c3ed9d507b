from django.urls import path

from generation import views

app_name = "generation"

urlpatterns = [
    path("generate/", views.generate, name="generate"),
    path("generate/import-png/", views.import_png, name="import_png"),
    path("generations/", views.jobs, name="jobs"),
    path("generations/<int:pk>/", views.detail, name="detail"),
    path("generations/<int:pk>/cancel/", views.cancel, name="cancel"),
    path("workers/", views.workers, name="workers"),
]
