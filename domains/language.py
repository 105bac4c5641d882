"""Each person's language (issue 15): chosen once, stored on their profile, used for their
pages, notifications and e-mails.

- A person who chose nothing gets their browser's language (Django's LocaleMiddleware:
  the language cookie, then Accept-Language). The language seen at login is remembered
  for what is written when no browser asks (notifications, e-mails, a worker's messages).
- A choice (the footer's switch on every page) is stored on the person's `Profile` and in
  their session; `UserLanguageMiddleware` activates the session's language on every
  request without a query, and keeps the language cookie in step with it (the cookie is
  part of a page poll's key, domains/kept_pages.py, and survives logging out).
- `language_of(user)` is the language to write to someone in; `for_user(user)` a context
  that writes in it.
"""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth.signals import user_logged_in
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse
from django.utils import translation
from django.views.decorators.http import require_POST
from django.views.i18n import set_language as django_set_language

SESSION_KEY = "vmpanel_language"


def supported(code: str | None) -> str:
    """`code` if the panel speaks it (a variant like "zh-cn" maps to "zh-hans"), else ""."""
    if not code:
        return ""
    try:
        return translation.get_supported_language_variant(code)
    except LookupError:
        return ""


def language_of(user) -> str:
    """The language to write to `user` (a User, or a user's id) in: their choice, else
    their browser's as last seen, else the panel's default."""
    from .models import Profile

    user_id = getattr(user, "pk", user)
    if user_id:
        profile = Profile.objects.filter(user_id=user_id).first()
        if profile is not None:
            chosen = supported(profile.language) or supported(profile.browser_language)
            if chosen:
                return chosen
    return settings.LANGUAGE_CODE


def for_user(user):
    """`with for_user(someone):` — what is written inside is in their language."""
    return translation.override(language_of(user))


def for_operation(op):
    """An operation's messages are written in the language of whoever asked for it: they
    are the first to read them (on its page, in the notification it leads to)."""
    return for_user(op.user_id)


@receiver(user_logged_in)
def remember_language(sender, request, user, **kwargs):
    """At login: a stored choice goes into the session (and so applies at once); without
    one, the browser's language is noted for the e-mails."""
    from .models import Profile

    profile, _created = Profile.objects.get_or_create(user=user)
    chosen = supported(profile.language)
    session = getattr(request, "session", None)
    if chosen:
        if session is not None:
            session[SESSION_KEY] = chosen
        return
    # LocaleMiddleware has activated the browser's language for this very request.
    seen = supported(translation.get_language())
    if seen and seen != profile.browser_language:
        profile.browser_language = seen
        profile.save(update_fields=["browser_language"])


class UserLanguageMiddleware:
    """After LocaleMiddleware (and the session): the signed-in person's chosen language,
    from their session, wins over the browser's; the language cookie follows it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        session = getattr(request, "session", None)
        chosen = supported(session.get(SESSION_KEY)) if session is not None else ""
        if chosen:
            translation.activate(chosen)
            request.LANGUAGE_CODE = chosen
        response = self.get_response(request)
        if chosen and request.COOKIES.get(settings.LANGUAGE_COOKIE_NAME) != chosen:
            _set_cookie(response, chosen)
        return response


def _set_cookie(response: HttpResponse, code: str) -> None:
    response.set_cookie(
        settings.LANGUAGE_COOKIE_NAME,
        code,
        max_age=settings.LANGUAGE_COOKIE_AGE,
        path=settings.LANGUAGE_COOKIE_PATH,
        domain=settings.LANGUAGE_COOKIE_DOMAIN,
        secure=settings.LANGUAGE_COOKIE_SECURE,
        httponly=settings.LANGUAGE_COOKIE_HTTPONLY,
        samesite=settings.LANGUAGE_COOKIE_SAMESITE,
    )


@require_POST
def set_language(request: HttpRequest) -> HttpResponse:
    """The footer's switch: Django's own view (the cookie, the safe `next`), and for a
    signed-in person the choice kept on their profile and in their session."""
    from .services.preferences import choose_language

    response = django_set_language(request)
    code = supported(request.POST.get("language"))
    if code and request.user.is_authenticated:
        choose_language(request.user, code)
        request.session[SESSION_KEY] = code
    return response
