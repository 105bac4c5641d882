#!/usr/bin/env bash
# `make test`: install what is missing, lint, then pytest with any extra arguments passed on
# (e.g. scripts/test.sh -k start -x).
#
# The hosts, Redis and the Celery worker are NOT started here: pytest's session fixtures start
# them through testhost.sh and redis.sh with a run folder and a Redis port of their own, so a
# running `make demo` and `make test` never share daemons, queues or locks.
set -euo pipefail
cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.."

scripts/install.sh --tests
.venv/bin/ruff check .
.venv/bin/ruff format --check .

status=0
.venv/bin/pytest "$@" || status=$?
# 5 = no tests collected: a wrong path, a broken conftest or a -k matching nothing must not
# pass as green.
if [ "$status" -eq 5 ]; then
  echo "test.sh: pytest collected no tests; treating that as a failure" >&2
  exit 1
fi
exit "$status"
