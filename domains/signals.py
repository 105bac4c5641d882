"""Audit rows for what happens at the door: logins, logouts, failed logins."""

from django.contrib.auth.signals import (
    user_logged_in,
    user_logged_out,
    user_login_failed,
)
from django.dispatch import receiver

# The language a person chose applies from their login on (domains/language.py).
from .language import remember_language  # noqa: F401
from .models import AuditEvent


@receiver(user_logged_in)
def record_login(sender, request, user, **kwargs):
    AuditEvent.objects.create(kind="login", user=user, summary=f"{user} logged in")


@receiver(user_logged_out)
def record_logout(sender, request, user, **kwargs):
    if user is not None:
        AuditEvent.objects.create(kind="logout", user=user, summary=f"{user} logged out")


@receiver(user_login_failed)
def record_login_failure(sender, credentials, request=None, **kwargs):
    username = str(credentials.get("username", ""))[:150]
    AuditEvent.objects.create(
        kind="login_failed",
        summary=f"failed login as {username!r}",
        detail={"username": username},
    )
