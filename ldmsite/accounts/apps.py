from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "ldmsite.accounts"
    label = "accounts"
    verbose_name = "Accounts"
