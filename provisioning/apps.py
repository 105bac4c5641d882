from django.apps import AppConfig


class ProvisioningConfig(AppConfig):
    name = "provisioning"
    verbose_name = "Provisioning"

    def ready(self) -> None:
        # A bigger VM counts against its team's quota as a new one does.
        from domains.services import resize

        from . import services

        if services.resize_quota_problems not in resize.SIZE_CHECKS:
            resize.SIZE_CHECKS.append(services.resize_quota_problems)
