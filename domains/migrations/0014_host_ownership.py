# Issue 14: a host's slow operations may be pinned to a Celery queue (workers near it).
# Who owns (watches) a host lives in Redis leases, not here (domains/leases.py).
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
    ]
