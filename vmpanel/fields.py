"""The form fields every form of the panel uses for numbers and for rows picked by key.

Django's own fields let two kinds of input through that the panel must not take:

- `forms.IntegerField` reads any Unicode digits: "１２" (full-width) or "١٢" (Arabic-Indic)
  is 12, so a value nobody can see typed sets a VM to 12 MiB. Here a number is ASCII
  digits, with an optional sign, and stays within a 32-bit column unless the field says
  more: the same answer on SQLite (whose columns take 64 bits) and PostgreSQL (whose
  `integer` takes 32, where a larger value is a DataError, a 500).
- `ModelMultipleChoiceField` looks its keys up with `pk__in`, which Django does not guard
  against out-of-range numbers: 10**22 is an OverflowError on SQLite (a 500), and the
  single choice reads "１２" as row 12. Here a key of an integer column is ASCII digits
  within the column's range, or the choice is invalid.

`formfield` is the `Meta.formfield_callback` of the model forms, so that their fields
derived from models are these too.
"""

from __future__ import annotations

import re

from django import forms
from django.core.exceptions import ValidationError
from django.db import connection, models

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1

# ASCII whitespace around a number is forgiven, as browsers send what was typed.
_ASCII_SPACE = " \t\r\n\f\v"
# Enough digits for any 64-bit number and a few leading zeros; more is not a number here.
_INTEGER_RE = re.compile(r"[+-]?[0-9]{1,25}")
_KEY_RE = re.compile(r"[0-9]{1,25}")


class IntegerField(forms.IntegerField):
    """A whole number in ASCII digits, between `min_value` and `max_value` (by default
    the range of a 32-bit column)."""

    def __init__(self, *, max_value=None, min_value=None, **kwargs):
        super().__init__(
            max_value=INT32_MAX if max_value is None else max_value,
            min_value=INT32_MIN if min_value is None else min_value,
            **kwargs,
        )

    def to_python(self, value):
        if value in self.empty_values:
            return None
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        text = str(value).strip(_ASCII_SPACE)
        if text in self.empty_values:
            return None
        if not _INTEGER_RE.fullmatch(text):
            raise ValidationError(self.error_messages["invalid"], code="invalid")
        return int(text)


def _key_field(field: forms.ModelChoiceField) -> models.Field:
    meta = field.queryset.model._meta
    return meta.get_field(field.to_field_name) if field.to_field_name else meta.pk


def _usable_key(field: forms.ModelChoiceField, value) -> bool:
    """Whether `value` may be looked up as a key of the field's rows at all."""
    if isinstance(value, field.queryset.model):
        return True
    key = _key_field(field)
    if not isinstance(key, models.IntegerField):  # AutoField and BigAutoField are, too
        return True
    text = str(value)
    if not _KEY_RE.fullmatch(text):
        return False
    low, high = connection.ops.integer_field_range(key.get_internal_type())
    number = int(text)
    return (low is None or number >= low) and (high is None or number <= high)


class ModelChoiceField(forms.ModelChoiceField):
    """A row picked by its key; a key its column cannot hold is an invalid choice."""

    def to_python(self, value):
        if value not in self.empty_values and not _usable_key(self, value):
            raise ValidationError(
                self.error_messages["invalid_choice"],
                code="invalid_choice",
                params={"value": value},
            )
        return super().to_python(value)


class ModelMultipleChoiceField(forms.ModelMultipleChoiceField):
    """Rows picked by their keys; a key its column cannot hold is an invalid choice."""

    def _check_values(self, value):
        if isinstance(value, (list, tuple)):
            for item in value:
                if not isinstance(item, (str, int)) or not _usable_key(self, item):
                    raise ValidationError(
                        self.error_messages["invalid_pk_value"],
                        code="invalid_pk_value",
                        params={"pk": item},
                    )
        return super()._check_values(value)


def formfield(db_field: models.Field, **kwargs) -> forms.Field | None:
    """`Meta.formfield_callback` of the panel's model forms: numbers and related rows get
    the fields above."""
    if isinstance(db_field, models.ManyToManyField):
        kwargs.setdefault("form_class", ModelMultipleChoiceField)
    elif isinstance(db_field, models.ForeignKey):
        kwargs.setdefault("form_class", ModelChoiceField)
    elif isinstance(db_field, models.IntegerField) and not db_field.choices:
        kwargs.setdefault("form_class", IntegerField)
    return db_field.formfield(**kwargs)
