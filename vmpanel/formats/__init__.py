"""The panel's date and time formats per language (FORMAT_MODULE_PATH): templates name a
format ("DATETIME_FORMAT"), each language says what it looks like. What a language does
not set here comes from Django's own formats for it."""
