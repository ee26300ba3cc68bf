#!/usr/bin/env bash
# `make test-examples`: the Python and Node.js examples against a throw-away
# redis-server with the module, on a free loopback port.
#
#   examples/run-examples.sh MODULE [SERVER]
#
# redis-py goes into a private virtualenv under
# ${XDG_CACHE_HOME:-~/.cache}/redis-lock/ (never the system Python), keyed by
# requirements.txt; node-redis into examples/node/node_modules with `npm ci`
# (package-lock.json is committed).
set -euo pipefail

module=$(realpath -e "${1:?usage: run-examples.sh MODULE [SERVER]}") || {
	echo "make test-examples: no module at $1: build it first (make build)" >&2
	exit 1
}
server=${2:-redis-server}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/redis-lock

# Like the rest of `make test`: as root on Debian/Ubuntu, apt-get installs
# what is missing; elsewhere the message says what to install.
apt_install() {
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "make test-examples: apt-get install $*" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null
	else
		return 1
	fi
}
command -v python3 >/dev/null || apt_install python3 python3-venv || {
	echo "make test-examples: python3 is missing (Debian/Ubuntu: apt-get install python3 python3-venv)" >&2
	exit 1
}
{ command -v node >/dev/null && command -v npm >/dev/null; } || apt_install nodejs npm || {
	echo "make test-examples: node and npm are missing (Debian/Ubuntu: apt-get install nodejs npm)" >&2
	exit 1
}

# Python: a virtualenv per requirements.txt content (or, where venv is
# missing, pip install --target into the same cache).
req=$here/python/requirements.txt
req_hash=$(sha256sum "$req" | cut -c1-12)
venv=$cache/python-examples-$req_hash
python=$venv/bin/python
if [ ! -f "$venv/.installed" ]; then
	echo "make test-examples: installing redis-py into $venv" >&2
	mkdir -p "$cache"
	rm -rf "$venv"
	if python3 -m venv "$venv" >/dev/null 2>&1 || { apt_install python3-venv && python3 -m venv "$venv"; }; then
		"$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
	else
		rm -rf "$venv"
		python3 -m pip install -q --disable-pip-version-check --target "$venv/site" -r "$req" || {
			echo "make test-examples: neither python3 -m venv nor pip works (Debian/Ubuntu: apt-get install python3-venv)" >&2
			exit 1
		}
	fi
	touch "$venv/.installed"
fi
if [ ! -x "$python" ]; then
	python=python3
	export PYTHONPATH=$venv/site
fi

# Node.js: npm ci when node_modules is missing or older than the lock file.
if [ ! -f "$here/node/node_modules/.package-lock.json" ] ||
	[ "$here/node/package-lock.json" -nt "$here/node/node_modules/.package-lock.json" ]; then
	echo "make test-examples: npm ci in examples/node" >&2
	(cd "$here/node" && npm ci --no-audit --no-fund --loglevel=error)
fi

# A throw-away server: its own directory, a free port, killed on exit.
dir=$(mktemp -d "${TMPDIR:-/tmp}/lock-examples-XXXXXX")
pid=
cleanup() {
	[ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT
for attempt in 1 2 3 4 5; do
	port=$((20000 + RANDOM % 30000))
	"$server" --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$dir" \
		--logfile "$dir/server.log" --loadmodule "$module" </dev/null >/dev/null 2>&1 &
	pid=$!
	for _ in $(seq 100); do
		kill -0 "$pid" 2>/dev/null || break
		[ "$(redis-cli -p "$port" PING 2>/dev/null)" = PONG ] && break 2
		sleep 0.1
	done
	kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
	pid=
	[ "$attempt" = 5 ] && {
		echo "make test-examples: redis-server did not start; log:" >&2
		cat "$dir/server.log" >&2
		exit 1
	}
done
export REDIS_URL=redis://127.0.0.1:$port/

failed=
echo "make test-examples: python ($("$python" -c 'import redis; print("redis-py", redis.__version__)')) against $("$server" --version | cut -d' ' -f1-3)"
"$python" "$here/python/lock_example.py" || failed="$failed python"
echo "make test-examples: node ($(cd "$here/node" && node -p '"node-redis " + require("redis/package.json").version'))"
(cd "$here/node" && node lock_example.js) || failed="$failed node"
if [ -n "$failed" ]; then
	echo "make test-examples: failed:$failed" >&2
	exit 1
fi
