"""Settings come from the environment; a bad value stops the process with its name."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
READ_SETTINGS = (
    "import django; from django.conf import settings; django.setup(); "
    "print(settings.VMPANEL_RECONCILE_SECONDS, settings.DEBUG)"
)


def load_settings(**env: str) -> subprocess.CompletedProcess:
    """Load vmpanel.settings in a fresh interpreter with `env` on top of a clean base."""
    base = {
        k: v
        for k, v in os.environ.items()
        if k in ("PATH", "HOME", "LANG", "LC_ALL", "DATABASE_URL", "TMPDIR")
    }
    return subprocess.run(
        [sys.executable, "-c", READ_SETTINGS],
        cwd=REPO,
        env={**base, "DJANGO_SETTINGS_MODULE": "vmpanel.settings", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("name", "value", "says"),
    [
        ("VMPANEL_RECONCILE_SECONDS", "abc", "must be a whole number"),
        ("VMPANEL_DOMAIN_LOCK_SECONDS", "1.5", "must be a whole number"),
        ("AXES_FAILURE_LIMIT", "five", "must be a whole number"),
        ("DEBUG", "maybe", "must be true or false"),
    ],
)
def test_bad_value_fails_at_start_naming_the_variable(name, value, says):
    proc = load_settings(**{name: value})

    assert proc.returncode != 0
    assert "django.core.exceptions.ImproperlyConfigured" in proc.stderr
    assert f"{name} {says}, not {value!r}" in proc.stderr


def test_good_values_are_read():
    proc = load_settings(VMPANEL_RECONCILE_SECONDS="7", DEBUG="yes")

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["7", "True"]


def test_defaults_need_no_environment():
    proc = load_settings()

    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["10", "False"]
