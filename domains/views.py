"""Placeholder views; the real ones are being written."""

from django.http import HttpResponse


def domain_list(request, **kwargs):
    return HttpResponse("todo")


def domain_detail(request, **kwargs):
    return HttpResponse("todo")


def domain_confirm(request, **kwargs):
    return HttpResponse("todo")


def domain_action(request, **kwargs):
    return HttpResponse("todo")


def domain_assign(request, **kwargs):
    return HttpResponse("todo")


def operation_detail(request, **kwargs):
    return HttpResponse("todo")


def activity(request, **kwargs):
    return HttpResponse("todo")


def host_list(request, **kwargs):
    return HttpResponse("todo")


def host_create(request, **kwargs):
    return HttpResponse("todo")


def host_detail(request, **kwargs):
    return HttpResponse("todo")


def host_edit(request, **kwargs):
    return HttpResponse("todo")


def host_set_enabled(request, **kwargs):
    return HttpResponse("todo")


def team_list(request, **kwargs):
    return HttpResponse("todo")


def team_detail(request, **kwargs):
    return HttpResponse("todo")


def team_member_set(request, **kwargs):
    return HttpResponse("todo")


def team_member_remove(request, **kwargs):
    return HttpResponse("todo")
