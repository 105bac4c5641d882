# Placeholder in the chain; the change that needs it fills in its operations.
from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("domains", "0013_change_counter")]

    operations = []
