from django.urls import path, re_path

from generation import training_views, views

app_name = "generation"

urlpatterns = [
    path("generate/", views.generate, name="generate"),
    path("generate/import-png/", views.import_png, name="import_png"),
    # A job's stored source picture (owner and staff only); ids of at most 18 digits, kinds init | mask.
    re_path(r"^generate/jobs/(?P<pk>[0-9]{1,18})/source/(?P<kind>init|mask)/$", views.source, name="source"),
    path("generations/", views.jobs, name="jobs"),
    path("generations/<int:pk>/", views.detail, name="detail"),
    path("generations/<int:pk>/cancel/", views.cancel, name="cancel"),
    path("workers/", views.workers, name="workers"),
    # LoRA training (pages beside /loras/, which the gallery serves).
    path("loras/train/", training_views.train, name="train_lora"),
    path("loras/trainings/<int:pk>/", training_views.training_page, name="training"),
    path("loras/trainings/<int:pk>/samples.png", training_views.training_samples, name="training_samples"),
    path("loras/trainings/<int:pk>/cancel/", training_views.training_cancel, name="training_cancel"),
]
