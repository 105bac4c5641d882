from django.contrib.auth import views as auth_views
from django.urls import include, path
from django.views.generic import RedirectView

from . import health

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="domain_list"), name="home"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("i18n/", include("django.conf.urls.i18n")),
    path("", include("domains.urls")),
    path("", include("provisioning.urls")),
]

# A locked database is a "try again" page, not a bare 500 (vmpanel/busy.py).
handler500 = "vmpanel.busy.server_error"
