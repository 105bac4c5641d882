from django.apps import AppConfig


class DomainsConfig(AppConfig):
    name = "domains"
    verbose_name = "Domains"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (login audit receivers)
