#!/bin/bash
# Install Debian 11's kernel (5.10) for the kernel matrix, without touching this machine's apt
# configuration: a temporary sources list naming bullseye (same archive URI as this machine's),
# its own lists and cache, `apt-get download`, then `dpkg -i`. Idempotent: a no-op once installed.
set -euo pipefail
PKG=${1:-linux-image-5.10.0-32-amd64}
VER=${PKG#linux-image-}
installed() { dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -q '^install ok installed$'; }
if installed; then exit 0; fi
# Unpacked by an earlier run whose dependencies were missing: configure it now that `make apt` ran.
if dpkg-query -W "$PKG" >/dev/null 2>&1; then
	DEBIAN_FRONTEND=noninteractive dpkg --configure "$PKG" >/dev/null && installed && exit 0
fi

# The archive this machine already uses (deb822 .sources or one-line .list).
uri=$(sed -n 's/^URIs: *\(http[^ ]*\/debian\)\/*$/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | head -1)
if [ -z "$uri" ]; then
	uri=$(grep -hoE '^deb +(\[[^]]*\] +)?http[^ ]*/debian/? ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
		2>/dev/null | awk '{print $NF}' | head -1)
fi
uri=${uri:-http://deb.debian.org/debian}
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

tmp=$(mktemp -d)
chmod 755 "$tmp"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial"
{
	echo "deb [signed-by=$keyring] $uri bullseye main"
	echo "deb [signed-by=$keyring] ${uri}-security bullseye-security main"
} > "$tmp/sources.list"
apt_tmp=(-o "Dir::Etc::sourcelist=$tmp/sources.list" -o Dir::Etc::sourceparts=- \
	-o "Dir::State::Lists=$tmp/lists" -o "Dir::Cache=$tmp/cache" -o APT::Get::List-Cleanup=0)
echo "fetching $PKG from $uri (bullseye), apt sources untouched"
apt-get -qq "${apt_tmp[@]}" update
(cd "$tmp" && apt-get -qq "${apt_tmp[@]}" download "$PKG")
DEBIAN_FRONTEND=noninteractive dpkg -i "$tmp"/linux-image-*.deb >/dev/null
installed && test -e "/boot/vmlinuz-$VER"
