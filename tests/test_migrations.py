"""The models and the migrations agree: a change to a model (a field, a verbose name, a
choice's words) comes with its migration, or `migrate` on a production database would
not make the schema the code expects."""

from __future__ import annotations

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_no_model_change_lacks_its_migration(capsys):
    try:
        call_command("makemigrations", "--check", "--dry-run", verbosity=1)
    except SystemExit as exc:  # makemigrations --check exits 1 when one is missing
        pytest.fail(f"a migration is missing:\n{capsys.readouterr().out}"[:3000], exc.code)
