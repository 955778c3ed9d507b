from django.urls import path

from generation import views

app_name = "generation"

urlpatterns = [
    path("generate/", views.generate, name="generate"),
    path("generations/", views.jobs, name="jobs"),
    path("generations/<int:pk>/", views.detail, name="detail"),
    path("generations/<int:pk>/cancel/", views.cancel, name="cancel"),
]
