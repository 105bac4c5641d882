# Entry points; the work is in scripts/ (see README.md).
# Extra pytest arguments: make test ARGS="-k start -x"
.PHONY: install demo demo-qemu demo-cluster test lint format messages stop clean

install:
	scripts/install.sh

demo:
	scripts/demo.sh

# Real QEMU guests on two root libvirtd hosts: save, restore and live migration with progress.
demo-qemu:
	VMPANEL_DEMO=qemu scripts/demo.sh

# As on several machines: 4 test-driver hosts, 2 watchers sharing them (kill one: its hosts
# are taken over within a lease), 2 workers, 2 web processes.
demo-cluster:
	VMPANEL_DEMO=cluster scripts/demo.sh

test:
	scripts/test.sh $(ARGS)

lint:
	.venv/bin/ruff check . && .venv/bin/ruff format --check .

format:
	.venv/bin/ruff format . && .venv/bin/ruff check --fix .

# Refresh the translations (locale/) from the code, compile them, list what is untranslated.
messages:
	scripts/messages.sh

# Stops what a demo left behind (it normally stops everything itself on Ctrl-C).
stop:
	scripts/stop.sh

# Also removes the run folder, collected static files and caches; keeps db.sqlite3 and .venv.
clean:
	scripts/stop.sh --clean
