from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView
from django.views.i18n import JavaScriptCatalog

from domains import language

from . import health

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="domain_list"), name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    # The footer's language switch: Django's view, and the choice kept on the person.
    path("i18n/setlang/", language.set_language, name="set_language"),
    # The words of the panel's own scripts (static/js/console.js), in the page's language.
    path("jsi18n/", JavaScriptCatalog.as_view(), name="javascript_catalog"),
    path("", include("domains.urls")),
    path("", include("provisioning.urls")),
]

# A locked database is a "try again" page, not a bare 500 (vmpanel/busy.py).
handler500 = "vmpanel.busy.server_error"
