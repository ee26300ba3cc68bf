#!/usr/bin/env bash
# `make run`: redis-server with redis.conf.example and the module, on
# 127.0.0.1:PORT, keeping its AOF and RDB files in DATA (never the checkout).
#
#   scripts/run.sh PORT DATA MODULE [SERVER]
set -euo pipefail

port=${1:?usage: run.sh PORT DATA MODULE [SERVER]}
data=${2:?}
module=$(realpath -e "${3:?}") || {
	echo "make run: no module at $3: build it first (make build)" >&2
	exit 1
}
server=${4:-redis-server}
cd "$(dirname "${BASH_SOURCE[0]}")/.."

[[ $port =~ ^[0-9]+$ ]] && [ "$port" -ge 1 ] && [ "$port" -le 65535 ] ||
	{
		echo "make run: PORT must be a TCP port number, not '$port'" >&2
		exit 2
	}

# Checked before starting, because redis-server's own "Address already in
# use" gives no hint. Debian's redis-server package runs a service on 6379.
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
	echo "make run: port $port is taken: something already listens on 127.0.0.1:$port." >&2
	if [ "$(redis-cli -p "$port" PING 2>&1)" = PONG ] || redis-cli -p "$port" PING 2>&1 | grep -q NOAUTH; then
		echo "  It is a Redis server: Debian's redis-server package starts one on 6379 as a service" >&2
		echo "  (stop it with: systemctl stop redis-server, or: service redis-server stop)." >&2
	fi
	echo "  Or pick another port: make run PORT=$((port == 65535 ? 6380 : port + 1))" >&2
	exit 1
fi

mkdir -p "$data"
data=$(cd "$data" && pwd)
cat >&2 <<EOF
make run: redis-server with the lock module on 127.0.0.1:$port
make run: its data (appendonlydir/, dump.rdb) is kept in $data;
          locks survive a restart; delete that directory to start empty.
EOF
exec "$server" redis.conf.example --port "$port" --dir "$data" --loadmodule "$module"
