"""Queries compiled once per shape and kept: the list pages' SQL text, not their rows.

Under load the list and activity pages spent more time in Django turning the same querysets
into SQL text (joins, permission subquery, filters, ordering: about half a millisecond per
query) than the database spent answering them (a twentieth of that). A query's text
depends only on its shape: who asks (the user's id is a parameter, and permission is a
subquery on memberships, so a role given or taken shows at once) and the page's filters,
never on the rows. So the text is compiled on the first request of a shape and run again as
it stands, its values passed through Django's own converters; the rows are read fresh on
every request.

The rule for callers: the key names everything the built queryset depends on (the user's
id and superuser flag, every filter value). Per process, at most KEPT shapes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import EmptyResultSet
from django.db import connections
from django.db.models import QuerySet

KEPT = 2048


@dataclass(frozen=True)
class _Compiled:
    alias: str
    sql: str | None  # None: the query can match nothing (Django's EmptyResultSet)
    params: tuple
    names: tuple[str, ...]
    # (column position, Django's converter functions, the column's expression)
    converters: tuple[tuple[int, tuple, Any], ...]


_compiled: OrderedDict[tuple, _Compiled] = OrderedDict()
_lock = threading.Lock()


def _compile(qs: QuerySet) -> _Compiled:
    query = qs.query
    compiler = query.get_compiler(qs.db)
    try:
        sql, params = compiler.as_sql()
    except EmptyResultSet:
        return _Compiled(qs.db, None, (), (), ())
    names = (*query.extra_select, *query.values_select, *query.annotation_select)
    columns = [column[0] for column in compiler.select[: compiler.col_count]]
    converters = tuple(
        (position, tuple(functions), expression)
        for position, (functions, expression) in compiler.get_converters(columns).items()
    )
    return _Compiled(qs.db, sql, tuple(params), names, converters)


def _kept(key: tuple, build: Callable[[], QuerySet]) -> _Compiled:
    with _lock:
        hit = _compiled.get(key)
        if hit is not None:
            _compiled.move_to_end(key)
            return hit
    compiled = _compile(build())
    with _lock:
        _compiled[key] = compiled
        while len(_compiled) > KEPT:
            _compiled.popitem(last=False)
    return compiled


def _run(compiled: _Compiled, sql: str) -> list[tuple]:
    with connections[compiled.alias].cursor() as cursor:
        cursor.execute(sql, compiled.params)
        return cursor.fetchall()


def rows(key: tuple, build: Callable[[], QuerySet]) -> list[dict]:
    """What `build()` (a `.values()` queryset) returns, as dicts, compiled once per `key`."""
    compiled = _kept(key, build)
    if compiled.sql is None:
        return []
    connection = connections[compiled.alias]
    found = []
    for raw in _run(compiled, compiled.sql):
        row = list(raw)
        for position, functions, expression in compiled.converters:
            value = row[position]
            for convert in functions:
                value = convert(value, expression, connection)
            row[position] = value
        found.append(dict(zip(compiled.names, row, strict=True)))
    return found


def count(key: tuple, build: Callable[[], QuerySet]) -> int:
    """How many rows `build()` matches, compiled once per `key`."""
    compiled = _kept(key, lambda: build().order_by().values("pk"))
    if compiled.sql is None:
        return 0
    return _run(compiled, f"SELECT COUNT(*) FROM ({compiled.sql}) counted")[0][0]


class Pages:
    """A `.values()` queryset of one shape for `Paginator`: its count and each page's rows
    come from SQL compiled once per (`key`, page bounds)."""

    ordered = True  # the builder orders; Paginator need not warn

    def __init__(self, key: tuple, build: Callable[[], QuerySet]):
        self.key = key
        self.build = build

    def count(self) -> int:
        return count(("count", *self.key), self.build)

    def __len__(self) -> int:
        return self.count()

    def __iter__(self):
        return iter(rows(("rows", *self.key), self.build))

    def __getitem__(self, bounds: slice) -> list[dict]:
        if not isinstance(bounds, slice) or bounds.step is not None:
            raise TypeError("Pages takes slices without a step")
        start, stop = bounds.start or 0, bounds.stop
        return rows(("rows", start, stop, *self.key), lambda: self.build()[start:stop])
