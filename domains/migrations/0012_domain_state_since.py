# Since when each domain is in its state (issue 13: a VM page says how long it has run).
# Rows that exist already get the time of this migration, not exact: the panel sees their
# state from now on, and says "for at least …".
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("domains", "0011_snapshots_and_clones")]

    operations = [
        migrations.AddField(
            model_name="domain",
            name="state_since",
            field=models.DateTimeField(default=django.utils.timezone.now),
        ),
        migrations.AddField(
            model_name="domain",
            name="state_since_exact",
            field=models.BooleanField(default=False),
        ),
    ]
