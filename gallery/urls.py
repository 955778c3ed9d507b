from django.urls import path

from gallery import views

app_name = "gallery"

urlpatterns = [
    path("images/", views.history, name="history"),
    path("images/upload/", views.upload_images, name="upload"),
    path("images/add-to-album/", views.add_selection_to_album, name="add_to_album"),
    path("images/<int:pk>/", views.image_page, name="image"),
    path("images/<int:pk>/file", views.image_file, name="image_file"),
    path("images/<int:pk>/thumbnail", views.image_thumbnail, name="image_thumbnail"),
    path("images/<int:pk>/save/", views.save_image, name="save"),
    path("images/<int:pk>/visibility/", views.set_visibility, name="visibility"),
    path("images/<int:pk>/delete/", views.delete_image, name="delete"),
    path("images/<int:pk>/like/", views.like, name="like"),
    path("images/<int:pk>/report/", views.report, name="report"),
    path("albums/", views.albums, name="albums"),
    path("albums/new/", views.create_album, name="create_album"),
    path("albums/<int:pk>/", views.album_page, name="album"),
    path("albums/<int:pk>/edit/", views.edit_album, name="edit_album"),
    path("explore/", views.explore, name="explore"),
    path("u/<str:username>/", views.profile, name="profile"),
    path("models/", views.models_page, name="models"),
    path("loras/", views.loras_page, name="loras"),
    path("loras/upload/", views.upload_lora, name="upload_lora"),
    path("loras/<int:pk>/", views.lora_page, name="lora"),
    path("loras/<int:pk>/file", views.lora_file, name="lora_file"),
    path("loras/<int:pk>/edit/", views.edit_lora, name="edit_lora"),
    path("loras/<int:pk>/report/", views.report_lora, name="report_lora"),
]
