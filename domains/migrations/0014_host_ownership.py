# Issue 14: a host's slow operations may be pinned to a Celery queue (workers near it), and
# a guest's rows on other hosts are found by UUID through an index (at 10,000 VMs a full
# read of a new host asked the whole table once per VM). Who owns (watches) a host lives in
# Redis leases, not here (domains/leases.py).
import django.core.validators
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("domains", "0013_change_counter")]

    operations = [
        migrations.AddField(
            model_name="host",
            name="celery_queue",
            field=models.CharField(
                blank=True,
                max_length=64,
                validators=[
                    django.core.validators.RegexValidator(
                        "^[A-Za-z0-9][A-Za-z0-9_.-]*\\Z",
                        "Letters, digits, dots, dashes and underscores; a letter or digit first.",
                    )
                ],
                verbose_name="worker queue for slow operations",
            ),
        ),
        migrations.AddIndex(
            model_name="domain",
            index=models.Index(fields=["uuid"], name="domain_uuid"),
        ),
    ]
