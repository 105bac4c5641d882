#!/usr/bin/env bash
# `make messages`: refresh the translations (locale/) from the code, compile them, and show
# what is left to translate.
#
# makemessages has the panel's defaults (domains/management/commands/makemessages.py): both
# domains (templates and Python; the scripts' JavaScript), every language but English, only
# the panel's own files. A new string arrives untranslated, a changed one fuzzy (msgmerge's
# guess from the old wording, to be checked): both are listed below, and both fail
# tests/test_i18n.py until translated. docs/translation.md says how, with the glossary.
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."
export VMPANEL_ALLOW_DEMO_SECRET=true

.venv/bin/python manage.py makemessages -v 0
missing=0
for po in locale/*/LC_MESSAGES/*.po; do
  mo="${po%.po}.mo"
  msgfmt --check -o "$mo.tmp" "$po"
  mv "$mo.tmp" "$mo"
  echo "$po: $(msgfmt --statistics -o /dev/null "$po" 2>&1)"
  # Each listing starts with the header entry, left out (sed) up to its blank line.
  todo=$(
    msgattrib --no-obsolete --untranslated "$po" | sed '1,/^$/d'
    msgattrib --no-obsolete --only-fuzzy "$po" | sed '1,/^$/d'
  )
  if grep -q '^msgid ' <<<"$todo"; then
    missing=1
    echo "  still to translate (untranslated, then fuzzy):"
    sed 's/^/    /' <<<"$todo"
  fi
done
[ "$missing" = 0 ] && echo "messages.sh: every entry is translated."
exit 0
