#!/bin/bash
# Build the retransmon OCI image from a wheel, offline: `make image` runs it.
#
#   deploy/image/build.sh IMAGE WHEEL
#
# 1. The base: `debootstrap --variant=minbase --include=python3,libbpf1 bookworm` from the Debian
#    archive apt already uses on this host (read from /etc/apt/sources.list*; DEBIAN_MIRROR
#    overrides it), trimmed of apt's caches, docs and locales, imported with `podman import` as
#    localhost/retransmon-base:bookworm-<hash of this recipe>. It is kept in podman's store, so
#    it is built once (~50 s) and reused until this script or its package list changes.
# 2. The wheel and its dependencies, installed on the host with pip into build/image/context
#    (`--only-binary :all:` for the image's Python), byte code compiled with unchecked hashes
#    (no timestamps), then `podman build --timestamp 0` adds them in one layer.
set -euo pipefail

image=${1:?usage: build.sh IMAGE WHEEL}
wheel=${2:?usage: build.sh IMAGE WHEEL}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/../.." && pwd)
python=${PYTHON:-$top/.venv/bin/python}
suite=bookworm
packages=python3,libbpf1

[[ -f $wheel ]] || { echo "build.sh: no wheel at $wheel (run make dist)" >&2; exit 2; }
command -v podman >/dev/null && command -v debootstrap >/dev/null ||
	{ echo "build.sh: podman and debootstrap are needed (make setup installs them)" >&2; exit 1; }

# The archive apt uses for $suite: one-line (.list) or deb822 (.sources) format.
mirror_from_apt() {
	cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		awk -v s="$suite" '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
			if ($(i + 1) == s) { print $i; exit } }'
	for f in /etc/apt/sources.list.d/*.sources; do
		[[ -f $f ]] || continue
		awk -v s="$suite" 'BEGIN { RS = "" } {
			uri = ""; ok = 0; n = split($0, line, "\n")
			for (j = 1; j <= n; j++) {
				if (line[j] ~ /^URIs:/) { split(line[j], u, " "); uri = u[2] }
				if (line[j] ~ /^Suites:/) { m = split(line[j], w, " "); for (k = 2; k <= m; k++) if (w[k] == s) ok = 1 }
			}
			if (ok && uri != "") { print uri; exit }
		}' "$f"
	done
}
mirror=${DEBIAN_MIRROR:-$(mirror_from_apt | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian}

# Raise base_recipe when the base's steps below change, so the cached base is rebuilt.
base_recipe=1
arch=$(dpkg --print-architecture)
recipe=$(printf '%s\n' "$suite" "$packages" "$arch" "$base_recipe" | sha256sum | cut -c1-12)
base=localhost/retransmon-base:$suite-$recipe

if podman image exists "$base"; then
	echo "base image $base (cached)"
else
	echo "building base image $base from $mirror"
	mkdir -p "$top/build"
	root=$(mktemp -d "$top/build/image-root.XXXXXX")
	trap 'rm -rf "$root"' EXIT
	debootstrap --variant=minbase --include="$packages" "$suite" "$root" "$mirror" >"$root.log" 2>&1 ||
		{ tail -n 20 "$root.log" >&2; echo "build.sh: debootstrap failed (log: $root.log)" >&2; exit 1; }
	rm -f "$root.log"
	# Not needed at run time: apt's caches and lists, docs (copyright files kept), man pages, locales, logs.
	rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/usr/share/man/* \
		"$root"/usr/share/locale/* "$root"/usr/share/info/* "$root"/var/log/* "$root"/var/cache/debconf/*-old
	find "$root/usr/share/doc" -mindepth 2 ! -name copyright ! -type d -delete
	pyver=$(readlink "$root/usr/bin/python3" | sed -n 's/^python\([0-9.]*\)$/\1/p')
	tar --sort=name --numeric-owner --mtime=@0 --clamp-mtime -C "$root" -c . |
		podman import --change "LABEL org.retransmon.python=$pyver" \
			--change "LABEL org.retransmon.debian-mirror=$mirror" - "$base" >/dev/null
	rm -rf "$root"
	trap - EXIT
fi

pyver=$(podman image inspect --format '{{index .Labels "org.retransmon.python"}}' "$base")
version=$(basename "$wheel" | cut -d- -f2)
ctx=$top/build/image/context
rm -rf "$ctx"
mkdir -p "$ctx"
"$python" -m pip install --quiet --disable-pip-version-check --no-compile --no-warn-script-location \
	--only-binary=:all: --python-version "$pyver" --implementation cp --target "$ctx/site" "$wheel" \
	2> >(grep -v "^WARNING: Location .* is ignored" >&2)
# Scripts with the host's interpreter, and where the wheel was installed from: not in the image.
rm -rf "$ctx/site/bin" "$ctx"/site/*.dist-info/direct_url.json
sed -i -e '\|^\.\./\.\./bin/|d' -e '\|/direct_url\.json,|d' "$ctx"/site/*.dist-info/RECORD
if [[ $("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])') == "$pyver" ]]; then
	"$python" -m compileall -q -j 0 --invalidation-mode unchecked-hash \
		-s "$ctx/site" -p "/usr/local/lib/python$pyver/dist-packages" "$ctx/site"
fi
install -m 0755 "$here/launcher.py" "$ctx/retransmon"
previous=$(podman image inspect --format '{{.Id}}' "$image" 2>/dev/null || true)
podman build --quiet --pull=never --timestamp 0 --build-arg "BASE=$base" --build-arg "VERSION=$version" \
	--build-arg "PYTHON=$pyver" -f "$here/Containerfile" -t "$image" "$ctx" >/dev/null
# The image this one replaces, unless a container still uses it: no pile of untagged images.
if [[ -n $previous && $previous != $(podman image inspect --format '{{.Id}}' "$image") ]]; then
	podman rmi "$previous" >/dev/null 2>&1 || true
fi
size=$(podman image inspect --format '{{.Size}}' "$image")
echo "built $image ($((size / 1000000)) MB, base $base)"
