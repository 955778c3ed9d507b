from django.urls import path

from generation.consumers import GenerationConsumer, TrainingConsumer

websocket_urlpatterns = [
    path("ws/generations/", GenerationConsumer.as_asgi()),
    path("ws/generations/<int:job_id>/", GenerationConsumer.as_asgi()),
    path("ws/trainings/<int:training_id>/", TrainingConsumer.as_asgi()),
]
