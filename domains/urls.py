from django.urls import path

from . import views

urlpatterns = [
    path("domains/", views.domain_list, name="domain_list"),
    path("domains/act/", views.domain_bulk, name="domain_bulk"),
    path("domains/<slug:host>/<str:uuid>/", views.domain_detail, name="domain_detail"),
    path(
        "domains/<slug:host>/<str:uuid>/confirm/<slug:action>/",
        views.domain_confirm,
        name="domain_confirm",
    ),
    path(
        "domains/<slug:host>/<str:uuid>/do/<slug:action>/",
        views.domain_action,
        name="domain_action",
    ),
    path(
        "domains/<slug:host>/<str:uuid>/team/",
        views.domain_assign,
        name="domain_assign",
    ),
    path("domains/<slug:host>/<str:uuid>/usage/", views.domain_usage, name="domain_usage"),
    path("domains/<slug:host>/<str:uuid>/console/", views.domain_console, name="domain_console"),
    path(
        "domains/<slug:host>/<str:uuid>/console/ticket/",
        views.console_ticket,
        name="console_ticket",
    ),
    path(
        "domains/<slug:host>/<str:uuid>/screen.png",
        views.domain_screenshot,
        name="domain_screenshot",
    ),
    path("domains/<slug:host>/<str:uuid>/save/", views.domain_save, name="domain_save"),
    path("domains/<slug:host>/<str:uuid>/migrate/", views.domain_migrate, name="domain_migrate"),
    path("domains/<slug:host>/<str:uuid>/resize/", views.domain_resize, name="domain_resize"),
    path("domains/<slug:host>/<str:uuid>/xml/", views.domain_xml_edit, name="domain_xml_edit"),
    path(
        "domains/<slug:host>/<str:uuid>/snapshots/",
        views.domain_snapshots,
        name="domain_snapshots",
    ),
    path(
        "domains/<slug:host>/<str:uuid>/snapshots/new/",
        views.domain_snapshot_create,
        name="domain_snapshot_create",
    ),
    path(
        "domains/<slug:host>/<str:uuid>/snapshots/revert/",
        views.domain_snapshot_revert,
        name="domain_snapshot_revert",
    ),
    path(
        "domains/<slug:host>/<str:uuid>/snapshots/delete/",
        views.domain_snapshot_delete,
        name="domain_snapshot_delete",
    ),
    path("operations/<int:pk>/", views.operation_detail, name="operation_detail"),
    path("operations/<int:pk>/cancel/", views.operation_cancel, name="operation_cancel"),
    path(
        "hosts/<slug:host>/images/<int:image_id>/restore/",
        views.image_restore,
        name="image_restore",
    ),
    path(
        "hosts/<slug:host>/images/<int:image_id>/forget/",
        views.image_forget,
        name="image_forget",
    ),
    path("activity/", views.activity, name="activity"),
    path("hosts/", views.host_list, name="host_list"),
    path("hosts/new/", views.host_create, name="host_create"),
    path("hosts/<slug:host>/", views.host_detail, name="host_detail"),
    path("hosts/<slug:host>/edit/", views.host_edit, name="host_edit"),
    path("hosts/<slug:host>/enabled/", views.host_set_enabled, name="host_set_enabled"),
    path("teams/", views.team_list, name="team_list"),
    path("teams/<slug:team>/", views.team_detail, name="team_detail"),
    path("teams/<slug:team>/members/", views.team_member_set, name="team_member_set"),
    path(
        "teams/<slug:team>/members/<int:user_id>/remove/",
        views.team_member_remove,
        name="team_member_remove",
    ),
]
