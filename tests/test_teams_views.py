"""Team pages: the list, a team's members, and its admins changing them.

Team A's admin (alice_admin) adds, re-roles and removes members; each change leaves an
audit event ("role_changed", "member_removed"). Its operator and viewer get 403 and change
nothing; outsiders get 404, as for a team that does not exist.
"""

from __future__ import annotations

import html

import pytest
from django.urls import reverse

from domains.models import AuditEvent, Membership, Role
from tests.helpers import client_for

pytestmark = [pytest.mark.django_db]


def roles(team) -> dict[str, str]:
    return dict(team.memberships.values_list("user__username", "role"))


def events():
    return AuditEvent.objects.exclude(kind__in=["login", "logout"]).order_by("pk")


TEAM_A = {
    "alice_admin": Role.ADMIN,
    "olga_operator": Role.OPERATOR,
    "victor_viewer": Role.VIEWER,
}


def test_team_list_shows_my_teams_and_my_role(people):
    page = client_for(people.olga_operator).get(reverse("team_list")).content.decode()

    assert '<a href="/teams/team-a/">Team A</a>' in page
    assert "Team B" not in page
    assert "<td>operator</td>" in page
    assert '<td class="num">3</td>' in page  # every member counted, not only me


def test_superuser_sees_every_team(people):
    page = client_for(people.root).get(reverse("team_list")).content.decode()

    assert '<a href="/teams/team-a/">Team A</a>' in page
    assert '<a href="/teams/team-b/">Team B</a>' in page


def test_team_detail_for_members(people):
    viewer = client_for(people.victor_viewer).get(reverse("team_detail", args=["team-a"]))
    admin = client_for(people.alice_admin).get(reverse("team_detail", args=["team-a"]))

    for response in (viewer, admin):
        assert response.status_code == 200
        page = response.content.decode()
        for name in TEAM_A:
            assert f"<td>{name}</td>" in page
        assert "bob_b" not in page
    assert "You are viewer here." in viewer.content.decode()
    assert "You are team admin here." in admin.content.decode()
    # Only the admin gets the forms.
    member_set = reverse("team_member_set", args=["team-a"])
    assert f'action="{member_set}"' in admin.content.decode()
    assert f'action="{member_set}"' not in viewer.content.decode()
    assert "/remove/" not in viewer.content.decode()


def test_admin_adds_a_member_with_a_role(people):
    client = client_for(people.alice_admin)

    response = client.post(
        reverse("team_member_set", args=["team-a"]),
        {"username": "nora_noteam", "role": Role.OPERATOR},
    )

    assert response.status_code == 303
    assert response["Location"] == reverse("team_detail", args=["team-a"])
    assert roles(people.team_a) == {**TEAM_A, "nora_noteam": Role.OPERATOR}
    event = events().get()
    assert (event.kind, event.user, event.team) == (
        "role_changed",
        people.alice_admin,
        people.team_a,
    )
    assert event.detail == {"member": "nora_noteam", "before": None, "after": "operator"}
    page = client.get(response["Location"]).content.decode()
    assert "nora_noteam is now operator in Team A." in page
    # And the new member sees the team's domains' team page now.
    assert client_for(people.nora_noteam).get(response["Location"]).status_code == 200


def test_admin_changes_a_role(people):
    response = client_for(people.alice_admin).post(
        reverse("team_member_set", args=["team-a"]),
        {"username": "victor_viewer", "role": Role.ADMIN},
    )

    assert response.status_code == 303
    assert roles(people.team_a)["victor_viewer"] == Role.ADMIN
    assert Membership.objects.filter(user=people.victor_viewer).count() == 1
    event = events().get()
    assert event.kind == "role_changed"
    assert event.detail == {"member": "victor_viewer", "before": "viewer", "after": "admin"}
    assert event.summary == "victor_viewer in Team A: viewer → admin"


def test_admin_removes_a_member(people):
    client = client_for(people.alice_admin)
    url = reverse("team_member_remove", args=["team-a", people.victor_viewer.pk])

    assert client.get(url).status_code == 405
    response = client.post(url)

    assert response.status_code == 303
    assert roles(people.team_a) == {"alice_admin": Role.ADMIN, "olga_operator": Role.OPERATOR}
    event = events().get()
    assert (event.kind, event.user, event.team) == (
        "member_removed",
        people.alice_admin,
        people.team_a,
    )
    assert event.detail == {"member": "victor_viewer"}
    assert "victor_viewer removed from Team A." in client.get(response["Location"]).content.decode()
    # The removed member no longer sees the team.
    detail = reverse("team_detail", args=["team-a"])
    assert client_for(people.victor_viewer).get(detail).status_code == 404


def test_removing_someone_who_is_not_a_member_changes_nothing(people):
    url = reverse("team_member_remove", args=["team-a", people.bob_b.pk])

    response = client_for(people.alice_admin).post(url)

    # Nobody of that number is in team A: a 404, which does not name them either.
    assert response.status_code == 404 and "bob_b" not in response.content.decode()
    assert roles(people.team_a) == TEAM_A
    assert roles(people.team_b) == {"bob_b": Role.OPERATOR}
    assert not events().exists()


def test_superuser_manages_any_team(people):
    client = client_for(people.root)

    client.post(
        reverse("team_member_set", args=["team-b"]), {"username": "olga_operator", "role": "viewer"}
    )
    client.post(reverse("team_member_remove", args=["team-b", people.bob_b.pk]))

    assert roles(people.team_b) == {"olga_operator": Role.VIEWER}
    assert list(events().values_list("kind", "user__username", "team__slug")) == [
        ("role_changed", "root", "team-b"),
        ("member_removed", "root", "team-b"),
    ]


@pytest.mark.parametrize("who", ["olga_operator", "victor_viewer"])
def test_operator_and_viewer_get_403_and_change_nothing(who, people):
    client = client_for(getattr(people, who))

    responses = [
        client.post(
            reverse("team_member_set", args=["team-a"]),
            {"username": "nora_noteam", "role": Role.ADMIN},
        ),
        client.post(
            reverse("team_member_set", args=["team-a"]), {"username": who, "role": Role.ADMIN}
        ),
        client.post(reverse("team_member_remove", args=["team-a", people.alice_admin.pk])),
    ]

    for response in responses:
        assert response.status_code == 403
        page = html.unescape(response.content.decode())
        assert "Only this team's admins may change its members." in page
    assert roles(people.team_a) == TEAM_A
    assert not Membership.objects.filter(user=people.nora_noteam).exists()
    assert not events().exists()


@pytest.mark.parametrize("who", ["bob_b", "nora_noteam", "alice_admin"])
def test_outsiders_get_404_and_change_nothing(who, people):
    """bob_b and nora are not in team A; alice_admin is not in team B."""
    team = "team-b" if who == "alice_admin" else "team-a"
    client = client_for(getattr(people, who))
    target = people.bob_b if team == "team-b" else people.victor_viewer
    before = set(Membership.objects.values_list("user_id", "team_id", "role"))

    responses = [
        client.get(reverse("team_detail", args=[team])),
        client.post(reverse("team_member_set", args=[team]), {"username": who, "role": Role.ADMIN}),
        client.post(reverse("team_member_remove", args=[team, target.pk])),
    ]

    assert [r.status_code for r in responses] == [404, 404, 404]
    assert set(Membership.objects.values_list("user_id", "team_id", "role")) == before
    assert not events().exists()


def test_unknown_team_is_404(people):
    client = client_for(people.root)

    assert client.get(reverse("team_detail", args=["team-z"])).status_code == 404
    response = client.post(
        reverse("team_member_set", args=["team-z"]), {"username": "bob_b", "role": "viewer"}
    )
    assert response.status_code == 404


def test_unknown_username_is_a_form_error(people):
    response = client_for(people.alice_admin).post(
        reverse("team_member_set", args=["team-a"]),
        {"username": "nobody_here", "role": Role.OPERATOR},
    )

    assert response.status_code == 400
    assert response.context["form"].errors["username"] == ["There is no user named “nobody_here”."]
    assert "There is no user named “nobody_here”." in response.content.decode()
    assert roles(people.team_a) == TEAM_A
    assert not events().exists()


def test_unknown_role_is_a_form_error(people):
    response = client_for(people.alice_admin).post(
        reverse("team_member_set", args=["team-a"]),
        {"username": "nora_noteam", "role": "owner"},
    )

    assert response.status_code == 400
    assert "role" in response.context["form"].errors
    assert roles(people.team_a) == TEAM_A


def test_remove_of_an_unknown_user_is_404(people):
    response = client_for(people.alice_admin).post(
        reverse("team_member_remove", args=["team-a", 999999])
    )

    assert response.status_code == 404
    assert roles(people.team_a) == TEAM_A
