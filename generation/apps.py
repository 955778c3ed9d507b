from django.apps import AppConfig
from django.db.models.signals import post_migrate


def register_builtin(sender, **kwargs):
    # Imported when migrations are done: this module is loaded before Django has loaded any model.
    from generation.registry import register_builtin_model

    register_builtin_model()


class GenerationConfig(AppConfig):
    name = "generation"
    verbose_name = "Generation"

    def ready(self):
        # A fresh database gets the shipped model as its default, with no extra step.
        post_migrate.connect(register_builtin, sender=self)
