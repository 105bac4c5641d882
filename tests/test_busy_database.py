"""A database busy past its timeout: a "try again" page, never a bare 500 (login
included), and a task's claim that waits it out instead of dying."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid as uuidlib
from contextlib import contextmanager

import pytest
from django.db import connection
from django.test import Client

from domains import tasks
from domains.models import Operation, OperationStatus
from tests.helpers import PASSWORD

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]


@contextmanager
def database_locked(seconds: float | None = None):
    """Another connection holds the write lock on the tables the panel uses (released
    after `seconds`, or at the end of the block), as a long transaction elsewhere would.
    The panel's own connection is told to wait only briefly for it."""
    if connection.vendor == "sqlite":
        name = connection.settings_dict["NAME"]
        other = sqlite3.connect(name, uri=True, check_same_thread=False)
        # Shared-cache in-memory test database: a table lock is met at once, not waited for.
        other.execute("BEGIN EXCLUSIVE")
        other.execute("UPDATE domains_operation SET message = message")
        other.execute("UPDATE auth_user SET last_name = last_name")
        release = other.rollback
        connection.ensure_connection()
        connection.connection.execute("PRAGMA busy_timeout = 300")  # not the usual 20 s
    else:
        import psycopg

        params = connection.get_connection_params()
        other = psycopg.connect(**params)
        other.execute("LOCK TABLE domains_operation, auth_user IN ACCESS EXCLUSIVE MODE")
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '300ms'")
        release = other.rollback
    timer = threading.Timer(seconds, release) if seconds else None
    if timer:
        timer.start()
    try:
        yield
    finally:
        if timer:
            timer.join()
        else:
            release()
        other.close()
        connection.close()  # the next connection waits as long as configured again


def test_login_on_a_busy_database_is_a_try_again_page(people):
    client = Client(raise_request_exception=False)
    with database_locked():
        response = client.post("/login/", {"username": "olga_operator", "password": PASSWORD})

    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "Try again in a moment" in response.content.decode()


def test_a_claim_waits_out_a_busy_database(people, make_domain, redis_server):
    domain = make_domain(state="shutoff")
    op = Operation.objects.create(
        kind="start", user=people.olga_operator, domain=domain, host=domain.host,
        domain_uuid=domain.uuid, domain_name=domain.name, team=domain.team,
        task_id=str(uuidlib.uuid4()),
    )  # fmt: skip

    started = time.monotonic()
    with database_locked(seconds=1.0):
        tasks.start_domain_task(op.pk)  # the worker's claim meets the lock first

    op.refresh_from_db()
    assert op.status == OperationStatus.SUCCEEDED, (op.message, op.error)
    assert time.monotonic() - started >= 1.0
