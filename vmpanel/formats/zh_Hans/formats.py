# Simplified Chinese pages: dates as Chinese readers write them (2026年11月29日 18:09:05).
DATETIME_FORMAT = "Y年n月j日 H:i:s"
SHORT_DATETIME_FORMAT = "Y年n月j日 H:i"
TIME_FORMAT = "H:i"
