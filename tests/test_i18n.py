"""Issue 15: the panel in Simplified Chinese, chosen per person.

- The catalogue (locale/zh_Hans) is complete: every entry translated, none fuzzy, each
  translation with exactly its English's placeholders; compiled; and up to date with the
  code (makemessages, run on a copy of the code, would add or drop nothing).
- Every page of the permission matrix, read by someone who chose Chinese, shows none of
  the catalogue's English (names, UUIDs, XML and libvirt's own words aside).
- A person's choice is kept on them: it survives a new login on another browser, wins over
  the browser's language, and is used for their e-mails, notifications and the messages of
  the operations they ask for. Without a choice, the browser's language is used.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from django.conf import settings
from django.core import mail
from django.test import Client
from django.urls import reverse

from domains.models import Domain, Host, Operation, OperationStatus, Profile, Team
from tests.helpers import PASSWORD, client_for, wait_finished
from tests.test_permission_matrix import CASES, ROLES, Case, world  # noqa: F401  (fixture)
from tests.test_words import _VisibleText
from tests.test_words import visible_text as words_visible_text

ROOT = Path(settings.BASE_DIR)
LOCALE = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES"
CATALOGUES = ("django.po", "djangojs.po")


# --- the catalogue as a file ------------------------------------------------------------


@dataclass
class Entry:
    msgid: str = ""
    msgctxt: str | None = None
    plural: str | None = None
    msgstrs: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    obsolete: bool = False

    @property
    def key(self) -> tuple[str | None, str]:
        return (self.msgctxt, self.msgid)


def read_po(path: Path) -> list[Entry]:
    """The entries of a .po file (gettext's format: blocks of comments, keywords and
    quoted C strings, separated by blank lines)."""
    entries = []
    for block in re.split(r"\n\s*\n", path.read_text(encoding="utf-8")):
        entry, current = Entry(), None
        for line in block.splitlines():
            if line.startswith("#~"):  # an obsolete entry: its lines, commented out
                entry.obsolete = True
                line = line[2:].strip()
            if line.startswith("#,"):
                entry.flags |= {flag.strip() for flag in line[2:].split(",")}
            elif line.startswith("#") or not line.strip():
                continue
            elif line.startswith('"'):
                text = ast.literal_eval(line)
                if current == "msgstr":
                    entry.msgstrs[-1] += text
                else:
                    setattr(entry, current, getattr(entry, current) + text)
            else:
                keyword, quoted = line.split(" ", 1)
                text = ast.literal_eval(quoted)
                if keyword.startswith("msgstr"):
                    current = "msgstr"
                    entry.msgstrs.append(text)
                else:
                    current = {"msgid": "msgid", "msgid_plural": "plural"}.get(keyword, keyword)
                    setattr(entry, current, text)
        if entry.msgstrs:
            entries.append(entry)
    return entries


def messages(name: str) -> list[Entry]:
    """The catalogue's live entries (not the header, not obsolete ones)."""
    return [e for e in read_po(LOCALE / name) if e.msgid and not e.obsolete]


# %(name)s, %(seconds).1f, %s, %% and str.format's {name}.
PLACEHOLDER = re.compile(r"%\(\w+\)[-#0 +]*\d*(?:\.\d+)?[sdifr]|%[sd%]|\{\w+\}")


def test_read_po_reads_what_gettext_writes(tmp_path):
    po = tmp_path / "t.po"
    po.write_text(
        'msgid ""\nmsgstr "Language: zh_Hans\\n"\n\n'
        '#, fuzzy, python-format\nmsgctxt "c"\nmsgid "a \\"b\\"\\n"\n"c %(n)s"\n'
        'msgstr "甲"\n"乙"\n\n'
        'msgid "one"\nmsgid_plural "many"\nmsgstr[0] "多"\n\n'
        '#~ msgid "old"\n#~ msgstr "旧"\n',
        encoding="utf-8",
    )
    header, first, plural, old = read_po(po)
    assert header.msgid == "" and header.msgstrs == ["Language: zh_Hans\n"]
    assert (first.msgctxt, first.msgid, first.msgstrs) == ("c", 'a "b"\nc %(n)s', ["甲乙"])
    assert first.flags == {"fuzzy", "python-format"}
    assert (plural.plural, plural.msgstrs) == ("many", ["多"])
    assert old.obsolete


@pytest.mark.parametrize("name", CATALOGUES)
def test_every_entry_is_translated_and_none_is_fuzzy(name):
    entries = read_po(LOCALE / name)
    header = entries[0]
    assert header.msgid == "" and "fuzzy" not in header.flags
    assert "Plural-Forms: nplurals=1; plural=0;" in header.msgstrs[0]
    live = [e for e in entries if e.msgid and not e.obsolete]
    assert len(live) > (1000 if name == "django.po" else 10)
    untranslated = [e.msgid for e in live if not all(s.strip() for s in e.msgstrs)]
    fuzzy = [e.msgid for e in live if "fuzzy" in e.flags]
    assert untranslated == [], f"untranslated in {name} (make messages lists them)"
    assert fuzzy == [], f"fuzzy in {name}: check each translation, then drop the flag"
    # zh has one plural form: exactly one msgstr[0] each.
    assert all(len(e.msgstrs) == 1 for e in live)


@pytest.mark.parametrize("name", CATALOGUES)
def test_each_translation_has_its_english_placeholders(name):
    wrong = []
    for entry in messages(name):
        english = entry.plural if entry.plural is not None else entry.msgid
        wanted = sorted(PLACEHOLDER.findall(english))
        if sorted(PLACEHOLDER.findall(entry.msgstrs[0])) != wanted:
            wrong.append((entry.msgid, entry.msgstrs[0]))
    assert wrong == []
    # gettext's own check (python-format and the header), as compilemessages runs it.
    checked = subprocess.run(
        ["msgfmt", "--check", "-o", os.devnull, str(LOCALE / name)],
        capture_output=True,
        text=True,
    )
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("name", CATALOGUES)
def test_the_compiled_catalogue_is_not_older_than_its_source(name):
    po, mo = LOCALE / name, LOCALE / name.replace(".po", ".mo")
    assert mo.exists() and mo.stat().st_mtime >= po.stat().st_mtime, (
        f"{mo.name} is missing or stale: scripts/install.sh (or make messages) compiles it"
    )


def test_the_catalogue_is_up_to_date_with_the_code(tmp_path):
    """makemessages on a copy of the code writes the same entries the catalogue has: no
    string of the code is missing (or would arrive untranslated), none is left over."""
    for part in ("domains", "provisioning", "vmpanel", "templates", "static/js", "locale"):
        shutil.copytree(
            ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns("__pycache__", "*.mo")
        )
    shutil.copy(ROOT / "manage.py", tmp_path)
    env = {**os.environ, "VMPANEL_ALLOW_DEMO_SECRET": "true"}
    env.pop("DJANGO_SETTINGS_MODULE", None)  # the copy's own vmpanel.settings
    subprocess.run(
        [sys.executable, "manage.py", "makemessages", "-v", "0"],
        cwd=tmp_path,
        env=env,
        check=True,
        timeout=120,
    )
    for name in CATALOGUES:
        ours = {e.key for e in messages(name)}
        made = {
            e.key
            for e in read_po(tmp_path / "locale/zh_Hans/LC_MESSAGES" / name)
            if e.msgid and not e.obsolete
        }
        assert sorted(made - ours, key=str) == [], f"{name}: run make messages and translate"
        assert sorted(ours - made, key=str) == [], f"{name}: no longer in the code"


def test_every_name_the_code_gives_gettext_is_extracted():
    """`from django.utils.translation import gettext_lazy as _lazy`: xgettext finds the
    calls of the names it is told, so every other name must be in makemessages' list (the
    words under it were missing from the catalogue, shown in English to everyone)."""
    from domains.management.commands.makemessages import ALIASES

    aliases = set()
    for part in ("domains", "provisioning", "vmpanel"):
        for path in (ROOT / part).glob("**/*.py"):
            aliases |= set(re.findall(r"\bgettext\w* as (\w+)", path.read_text()))
    assert "_lazy" in aliases  # what the test looks for is there to be found
    assert aliases - {"_"} <= set(ALIASES)


# --- every page of the permission matrix, in Chinese ----------------------------------


class _ReadableText(_VisibleText):
    """The visible text (tests/test_words.py) without what the page marks translate="no":
    libvirt's own names and words, which stay as libvirt says them."""

    def __init__(self):
        super().__init__()
        self.kept: list[str] = []  # the open elements marked translate="no", and inside

    VOID = {"br", "hr", "img", "input", "wbr", "meta", "link", "source", "col"}

    def handle_starttag(self, tag, attrs):
        if self.kept or dict(attrs).get("translate") == "no":
            if tag not in self.VOID:  # an element with no end tag never closes
                self.kept.append(tag)
            return
        super().handle_starttag(tag, attrs)

    def handle_endtag(self, tag):
        if self.kept:
            if self.kept[-1] == tag:
                self.kept.pop()
            return
        super().handle_endtag(tag)

    def handle_data(self, data):
        if not self.kept:
            super().handle_data(data)


def visible_text(html: str) -> str:
    return words_visible_text(html, _ReadableText)


def test_visible_text_leaves_out_what_is_not_to_be_translated():
    html = '<p>虚拟机</p><td translate="no">state, <b>iothread</b></td><pre>&lt;domain/&gt;</pre>'
    assert visible_text(html) == "虚拟机"


# Words that are the same in Chinese (units, acronyms, names of programs).
KEPT_AS_THEY_ARE = (
    "vmpanel", "libvirt", "libvirtd", "UUID", "XML", "vCPU", "vCPUs", "MiB", "GiB", "KiB",
    "CPU", "VNC", "ID", "MAC", "IP", "URI", "BIOS", "UEFI", "SMBIOS", "ISO", "PXE", "KVM",
    "QEMU", "Redis", "English", "Ctrl-Alt-Del", "UTC", "qcow2", "virtio",
)  # fmt: skip


def english_fragments() -> list[re.Pattern]:
    """What of the catalogue's English would show if a string were left untranslated: each
    msgid whose Chinese differs, cut at its placeholders, each piece with a word of three
    letters or more (as whole words, case-sensitive)."""
    patterns = set()
    for entry in messages("django.po"):
        if entry.msgstrs[0] == entry.msgid:
            continue
        for piece in PLACEHOLDER.split(entry.msgid):
            piece = piece.strip(" \n.,:;()[]“”\"'—–-…/#?!<>=+*")
            words = re.findall(r"[A-Za-z]{3,}", piece)
            if not words or all(w in KEPT_AS_THEY_ARE for w in words):
                continue
            patterns.add(piece)
    return [
        re.compile(r"(?<![\w-])" + re.escape(p) + r"(?![\w-])")
        for p in sorted(patterns, key=len, reverse=True)
    ]


def names_in_the_world() -> list[str]:
    """What the test data calls things: names, not words to translate."""
    from django.contrib.auth import get_user_model

    from provisioning.models import Template, VMRequest

    names = [*get_user_model().objects.values_list("username", flat=True)]
    names += Team.objects.values_list("name", flat=True)
    names += Host.objects.values_list("name", flat=True)
    names += Domain.objects.values_list("name", flat=True)
    names += Template.objects.values_list("name", flat=True)
    for req in VMRequest.objects.all():
        names += [req.name, req.purpose, req.reason]
    names += Operation.objects.values_list("domain_name", flat=True)
    return sorted({n for n in names if n}, key=len, reverse=True)


def english_left(html: str) -> list[str]:
    text = visible_text(html)
    for name in names_in_the_world():
        text = text.replace(name, " ")
    found = []
    for pattern in english_fragments():
        for match in pattern.finditer(text):
            found.append(match.group(0))
        text = pattern.sub(" ", text)
    return found


def chinese_client(user) -> Client:
    """A signed-in client for someone who chose Chinese (their browser says English)."""
    Profile.objects.update_or_create(user=user, defaults={"language": "zh-hans"})
    client = Client(HTTP_ACCEPT_LANGUAGE="en")
    client.force_login(user, backend="django.contrib.auth.backends.ModelBackend")
    return client


def _cells(case: Case) -> list[str]:
    """The people whose answer has a page to read: every one for a GET (a refusal is a
    page too), one per kind of answer for a write (it changes the world)."""
    cells, seen = [], set()
    for role in ROLES[1:]:
        status = case.expected(role)
        if status in (302, 405) or (case.method == "post" and status in seen):
            continue
        seen.add(status)
        cells.append(role)
    return cells


# Not here: the probes (for machines), and the language switch, which this row of the
# matrix uses to choose English (test_a_choice_is_kept_on_the_person_and_follows_them).
READABLE = [
    url
    for url, case in CASES.items()
    if _cells(case) and url not in ("healthz", "readyz", "set_language")
]


@pytest.mark.integration
@pytest.mark.django_db
@pytest.mark.parametrize("url", READABLE)
def test_every_page_of_the_matrix_is_in_chinese(url, world, settings, request):  # noqa: F811
    case = CASES[url]
    settings.VMPANEL_QUICK_WAIT_SECONDS = 0
    if case.needs_worker:
        request.getfixturevalue("celery_worker")
    path = case.url(world)
    problems = {}
    for role in _cells(case):
        client = chinese_client(getattr(world.people, role))
        if case.method == "get":
            response = client.get(path)
        else:
            # Follow the answer to the page it leads to: its one-time message is read there.
            response = client.post(path, case.data(world), follow=True)
        assert response.status_code < 500, (role, response.status_code)
        kind = response.get("Content-Type", "")
        if "json" in kind:  # a refusal the page's script shows
            html = "<p>" + "</p><p>".join(map(str, response.json().values())) + "</p>"
        elif "html" in kind:
            html = response.content.decode()
            if "<html" in html:  # a whole page, not an htmx fragment
                assert '<html lang="zh-hans">' in html, (role, url)
        else:
            continue
        left = english_left(html)
        if left:
            problems[role] = left
    assert problems == {}


def test_the_login_page_follows_the_browser(db):
    page = Client(HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.9,en;q=0.5").get(reverse("login"))
    assert '<html lang="zh-hans">' in page.content.decode()
    assert "登录 vmpanel" in page.content.decode()
    assert english_left(page.content.decode()) == []
    english = Client(HTTP_ACCEPT_LANGUAGE="en-GB").get(reverse("login")).content.decode()
    assert "Log in to vmpanel" in english


# --- the choice, kept on the person ------------------------------------------------------


@pytest.mark.django_db
def test_a_choice_is_kept_on_the_person_and_follows_them(people):
    olga = people.olga_operator
    first = Client(HTTP_ACCEPT_LANGUAGE="en")
    first.force_login(olga, backend="django.contrib.auth.backends.ModelBackend")
    assert "Virtual machines" in first.get("/domains/").content.decode()

    answer = first.post(reverse("set_language"), {"language": "zh-hans", "next": "/teams/"})

    assert answer.status_code == 302 and answer["Location"] == "/teams/"
    assert Profile.objects.get(user=olga).language == "zh-hans"
    page = first.get("/teams/").content.decode()
    assert '<html lang="zh-hans">' in page and "团队" in page
    # Another browser, which asks for English: the person's choice wins, from the login on.
    other = Client(HTTP_ACCEPT_LANGUAGE="en-US,en;q=0.9")
    assert other.post(reverse("login"), {"username": "olga_operator", "password": PASSWORD})[
        "Location"
    ].startswith("/")
    page = other.get("/domains/")
    assert '<html lang="zh-hans">' in page.content.decode()
    assert page.cookies[settings.LANGUAGE_COOKIE_NAME].value == "zh-hans"
    # Back to English, from any page.
    other.post(reverse("set_language"), {"language": "en", "next": "/domains/"})
    assert Profile.objects.get(user=olga).language == "en"
    assert '<html lang="en">' in other.get("/domains/").content.decode()
    # Someone else, who chose nothing, keeps their browser's language.
    victor = Client(HTTP_ACCEPT_LANGUAGE="zh-CN")
    victor.force_login(people.victor_viewer, backend="django.contrib.auth.backends.ModelBackend")
    assert '<html lang="zh-hans">' in victor.get("/domains/").content.decode()


@pytest.mark.django_db
def test_a_language_the_panel_does_not_speak_changes_nothing(people):
    client = client_for(people.olga_operator)
    client.post(reverse("set_language"), {"language": "xx", "next": "/domains/"})
    assert not Profile.objects.filter(user=people.olga_operator, language="xx").exists()


@pytest.mark.django_db
def test_the_browser_language_seen_at_login_is_noted_for_the_mail(people):
    client = Client(HTTP_ACCEPT_LANGUAGE="zh-CN,zh;q=0.8")
    client.post(reverse("login"), {"username": "victor_viewer", "password": PASSWORD})
    from domains.language import language_of

    assert Profile.objects.get(user=people.victor_viewer).browser_language == "zh-hans"
    assert language_of(people.victor_viewer) == "zh-hans"
    assert language_of(people.bob_b) == "en"  # never seen: the panel's default


@pytest.mark.integration
@pytest.mark.django_db
def test_mail_and_notifications_are_written_in_the_recipients_language(
    people, hosts, django_capture_on_commit_callbacks
):
    from provisioning import services
    from provisioning.models import Notification
    from tests.test_provisioning_create import make_template

    # The team admin chose Chinese; the requester's browser was Chinese at his last login.
    Profile.objects.create(user=people.alice_admin, language="zh-hans")
    Profile.objects.create(user=people.victor_viewer, browser_language="zh-hans")
    template = make_template(hosts)
    with django_capture_on_commit_callbacks(execute=True):
        req = services.submit_request(
            people.victor_viewer, people.team_a, template, "req-zh", 1, 512, "test"
        )
    (to_admin,) = mail.outbox
    assert to_admin.to == [people.alice_admin.email]
    assert "用模板" in to_admin.body and "请批准或拒绝" in to_admin.body
    assert to_admin.subject.startswith("vmpanel：")

    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        services.reject_request(people.alice_admin, req, "没有空间")
    (to_requester,) = mail.outbox
    assert to_requester.to == [people.victor_viewer.email]
    assert to_requester.body == f"您的申请 #{req.pk}（req-zh）被拒绝了：没有空间"
    assert Notification.objects.get(user=people.victor_viewer).text == to_requester.body

    # Someone with neither a choice nor a seen browser is written to in the default.
    Profile.objects.filter(user=people.victor_viewer).delete()
    mail.outbox.clear()
    with django_capture_on_commit_callbacks(execute=True):
        req = services.submit_request(
            people.victor_viewer, people.team_a, template, "req-en", 1, 512, "test"
        )
        services.reject_request(people.alice_admin, req, "full")
    assert mail.outbox[-1].body == f"Your request #{req.pk} for req-en was rejected: full"


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_an_operations_messages_are_in_the_language_of_who_asked(
    people, make_domain, celery_worker
):
    domain = make_domain(state="shutoff")
    client = chinese_client(people.olga_operator)
    url = reverse("domain_action", args=[domain.host.name, str(domain.uuid), "start"])

    client.post(url)

    op = wait_finished(Operation.objects.get(domain=domain, kind="start"))
    assert (op.status, op.message) == (OperationStatus.SUCCEEDED, "已启动。")
    page = client.get(reverse("operation_detail", args=[op.pk])).content.decode()
    assert "已启动。" in page
    # Dates as Chinese readers write them.
    assert re.search(r"\d{4}年\d{1,2}月\d{1,2}日 \d\d:\d\d:\d\d", page)
    # A reader of English sees the panel's own sentence in English where it can be
    # recognised ("Started." from an English asker), and the asker's words otherwise.
    Operation.objects.filter(pk=op.pk).update(message="Started.")
    page = client.get(reverse("operation_detail", args=[op.pk])).content.decode()
    assert "已启动。" in page and "Started." not in visible_text(page)


@pytest.mark.django_db
def test_the_scripts_words_come_in_the_readers_language(people):
    page = chinese_client(people.olga_operator).get(reverse("javascript_catalog"))
    assert page.status_code == 200
    assert json.dumps("正在连接…")[1:-1] in page.content.decode()
    english = client_for(people.victor_viewer).get(reverse("javascript_catalog"))
    assert json.dumps("正在连接…")[1:-1] not in english.content.decode()


@pytest.mark.django_db
def test_english_left_finds_the_catalogues_english(people):
    html = "<p>虚拟机</p><button>Back to the virtual machines</button><p>Team A 团队</p>"
    assert english_left(html) == ["Back to the virtual machines"]
    # Placeholders cut a sentence into the pieces that would show.
    assert sorted(english_left("<p>Host alpha is disabled.</p>")) == ["Host", "is disabled"]


@pytest.mark.integration
@pytest.mark.django_db
def test_the_audit_trail_reads_in_the_readers_language(people, hosts, make_domain):
    from domains.services import hosts as host_services
    from domains.services.common import ActionRefused
    from provisioning import services
    from tests.test_provisioning_create import make_template

    template = make_template(hosts)
    with pytest.raises(ActionRefused):  # refused in the asker's English
        services.submit_request(people.victor_viewer, people.team_a, template, "no!", 1, 512, "x")
    host_services.set_host_enabled(people.root, hosts.beta, False)
    services.set_quota(people.root, people.team_a, max_vcpus=16, max_memory_mib=16384)
    services.set_quota(people.root, people.team_a, max_vcpus=16, max_memory_mib=32768)
    make_domain(state="paused")

    client = chinese_client(people.root)
    page = client.get(reverse("activity")).content.decode()

    assert "root 停用了主机 beta。" in page
    assert "root 修改了 Team A 的配额：内存上限从 16384 提高到 32768 MiB。" in page
    # The sentence is the reader's; the refusal's own words stay as they were written.
    assert "victor_viewer 申请的 no! 被拒绝了：A name is letters" in page
    # libvirt's reason for a state, in words.
    assert "被人暂停" in client.get(reverse("domain_list")).content.decode()


def test_a_label_keeps_the_case_of_its_first_word():
    from domains.templatetags.vmpanel import label_case

    assert label_case("snapshots per VM") == "Snapshots per VM"
    assert label_case("vCPUs") == "vCPUs"  # Django's capfirst: "VCPUs"
    assert label_case("vCPU 数") == "vCPU 数"
    assert label_case("内存（MiB）") == "内存（MiB）"
