"""Django's makemessages with the panel's defaults (issue 15), so that `manage.py
makemessages` alone (or `make messages`) refreshes the whole catalogue the same way every
time, and tests/test_i18n.py can tell whether the catalogue is up to date with the code:

- both domains, the templates' and Python's (`django`) and the scripts' (`djangojs`),
  unless one is named with -d;
- the panel's languages other than English (zh_Hans), unless -l/-a says otherwise;
- only the panel's own files: not the tests, benchmarks, vendored scripts or collected
  static files;
- entries no longer in the code are dropped, and locations name the file only (line
  numbers would change the catalogue with every edit above a string);
- the code's other names for gettext (ALIASES) are extracted too.
"""

from django.conf import settings
from django.core.management.commands import makemessages
from django.utils.translation import to_locale

IGNORED = [
    "tests/*",
    "bench/*",
    "scripts/*",
    "static/vendor/*",
    "staticfiles/*",
    "locale/*",
    "test-results/*",
]


def catalogue_locales() -> list[str]:
    return [to_locale(code) for code, _name in settings.LANGUAGES if code != "en"]


# The names the code gives gettext besides `_` (`from … import gettext_lazy as _lazy`):
# xgettext finds only the calls it is told the names of.
ALIASES = ["_lazy", "_noop"]


class Command(makemessages.Command):
    help = makemessages.Command.help + " Defaults: both domains, the panel's languages."
    xgettext_options = [
        *makemessages.Command.xgettext_options,
        *(f"--keyword={alias}" for alias in ALIASES),
    ]

    def handle(self, *args, **options):
        options["ignore_patterns"] = [*(options.get("ignore_patterns") or []), *IGNORED]
        options["no_obsolete"] = True
        if not options.get("add_location"):
            options["add_location"] = "file"
        if not (options.get("locale") or options.get("exclude") or options.get("all")):
            options["locale"] = catalogue_locales()
        # Django's own default is "django"; a -d on the command line names just one.
        domains = [options["domain"]] if options.get("domain_given") else ["django", "djangojs"]
        for domain in domains:
            super().handle(*args, **{**options, "domain": domain})

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.set_defaults(domain=None)

    def execute(self, *args, **options):
        options["domain_given"] = options.get("domain") is not None
        if options["domain"] is None:
            options["domain"] = "django"
        return super().execute(*args, **options)
