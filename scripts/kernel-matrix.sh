#!/bin/bash
# The kernel matrix (`make matrix`, part of `make test`): each kernel booted in its own VM with
# virtme-ng over this machine's root filesystem (qemu, TCG: no KVM needed), one VM at a time,
# running scripts/kernel-matrix-guest.sh. One line per kernel; exit 1 if any failed.
# The kernels come from `make kernels` (Debian 12's 6.1 and 6.12, Debian 11's 5.10).
set -uo pipefail
cd "$(dirname "$0")/.."
KERNELS=${KERNELS:-5.10.0-32-amd64 6.1.0 6.12.}
mkdir -p build/matrix
export PATH="$PWD/.venv/bin:$PATH"
failed=0
summary=()
for k in $KERNELS; do
	image=$(ls /boot/vmlinuz-"$k"* 2>/dev/null | sort -V | tail -1)
	if [ -z "$image" ]; then
		summary+=("kernel $k: FAIL (no /boot/vmlinuz-$k*: run make setup)")
		failed=1
		continue
	fi
	ver=${image#/boot/vmlinuz-}
	log=build/matrix/$ver.log
	start=$(date +%s)
	timeout 1500 vng --disable-kvm --memory 2G --cpus 2 --run "$image" --user root --cwd "$PWD" --rwdir "$PWD/build/matrix" \
		--exec "bash scripts/kernel-matrix-guest.sh" </dev/null >"$log" 2>&1
	rc=$?
	took=$(($(date +%s) - start))
	result=$(grep -a '^matrix-result ' "$log" | tail -1)
	read -r _ _ verdict hooks counting <<<"$result"
	if [ "$rc" -ne 0 ] || [ "${verdict:-}" != PASS ]; then
		failed=1
		summary+=("kernel $ver: FAIL after ${took}s (log: $log)")
		tail -40 "$log"
	else
		summary+=("kernel $ver: PASS in ${took}s: hooks $hooks, counting $counting")
	fi
done
printf '%s\n' "${summary[@]}"
exit "$failed"
