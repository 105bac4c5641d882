from django.apps import AppConfig


class DomainsConfig(AppConfig):
    name = "domains"
    verbose_name = "Domains"

    def ready(self) -> None:
        from django.db.models.signals import post_migrate

        from . import kept_pages, signals  # noqa: F401  (login audit receivers)

        # The change count's triggers on new tables, and on tables a migration rebuilt.
        post_migrate.connect(kept_pages.on_migrate, sender=self)
