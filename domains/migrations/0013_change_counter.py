# The change count that pages which update themselves ask first (domains/kept_pages.py):
# a count in the database and triggers that bump it on every write to a table pages read.
# Vendor-specific (SQLite: a one-row table; PostgreSQL: a sequence); kept_pages holds the
# SQL, and re-applies it after every migrate for new and rebuilt tables.
from django.db import migrations

from domains import kept_pages


def forwards(apps, schema_editor):
    kept_pages.track_changes(schema_editor.connection, apps)


def backwards(apps, schema_editor):
    kept_pages.untrack_changes(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [
        ("domains", "0012_domain_state_since"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("sessions", "0001_initial"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
