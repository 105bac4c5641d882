"""What a person chooses for themselves alone: their language (issue 15)."""

from __future__ import annotations

from django.contrib.auth.models import User

from ..language import supported
from ..models import Profile


def choose_language(user: User, code: str) -> str:
    """Keep `user`'s language for their pages, notifications and e-mails. A code the panel
    does not speak keeps nothing. Not on the audit trail: it changes nobody else's view."""
    code = supported(code)
    if code:
        Profile.objects.update_or_create(user=user, defaults={"language": code})
    return code
