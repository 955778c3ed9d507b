from django.urls import path

from gallery import views

app_name = "gallery"

urlpatterns = [
    path("images/", views.history, name="history"),
    path("images/<int:pk>/", views.image_page, name="image"),
    path("images/<int:pk>/file", views.image_file, name="image_file"),
    path("images/<int:pk>/thumbnail", views.image_thumbnail, name="image_thumbnail"),
    path("images/<int:pk>/save/", views.save_image, name="save"),
]
