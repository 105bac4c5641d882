from django.urls import path

from . import views

urlpatterns = [
    path("templates/", views.template_list, name="template_list"),
    path("templates/new/", views.template_edit, name="template_new"),
    path("templates/<int:pk>/edit/", views.template_edit, name="template_edit"),
    path("templates/<int:pk>/delete/", views.template_delete, name="template_delete"),
    path("templates/<int:pk>/create/", views.template_create_domain, name="template_create"),
    path("provisioning/<int:pk>/", views.provision_detail, name="provision_detail"),
    path("requests/", views.request_list, name="request_list"),
    path("requests/new/", views.request_new, name="request_new"),
    path("requests/<int:pk>/", views.request_detail, name="request_detail"),
    path("requests/<int:pk>/approve/", views.request_approve, name="request_approve"),
    path("requests/<int:pk>/reject/", views.request_reject, name="request_reject"),
    path("notifications/", views.notification_list, name="notification_list"),
    path("notifications/read/", views.notification_read, name="notification_read"),
    path("nav/counts/", views.nav_counts, name="nav_counts"),
    path("teams/<slug:team>/quota/", views.team_quota, name="team_quota"),
    path("domains/<slug:host>/<str:uuid>/clone/", views.domain_clone, name="domain_clone"),
]
