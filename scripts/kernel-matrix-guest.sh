#!/bin/bash
# Inside one matrix VM (scripts/kernel-matrix.sh): check, then the focused tests for this kernel.
# Prints one line `matrix-result <kernel> PASS|FAIL <hooks> <counting>` at the end.
set -u
cd "$(dirname "$0")/.."
kernel=$(uname -r)
if [ ! -d /sys/kernel/tracing/events ]; then mount -t tracefs nodev /sys/kernel/tracing; fi
ip link set lo up 2>/dev/null
check=$(.venv/bin/retransmon check 2>/dev/null)
echo "$check"
hooks=$(sed -n 's/.*load and attach *hooks \([^:]*\):.*/\1/p' <<<"$check")
counting=$(grep -q 'counting exact' <<<"$check" && echo exact || echo per-event)

tests=(tests/matrix/test_kernel.py)
if [ "$counting" = exact ]; then
	# The root exactness tests that matter most on an older kernel: bulk with loss over IPv4 and
	# IPv6, SYN-ACK, a short-connection churn, the segments-sent denominator, trace.
	tests+=(
		"tests/integration/test_serve_exact.py::test_bulk_transfer_with_loss_matches_retranssegs"
		"tests/integration/test_serve_exact.py::test_synack_retransmits_are_counted_with_kind_synack"
		"tests/integration/test_sent_and_attribution.py::test_churn_default_labels_stay_few_and_flow_labels_tell_connections_apart"
		"tests/integration/test_least_privilege.py::test_trace_with_only_bpf_and_perfmon_counts_exactly[uid0]"
		"tests/integration/test_chaos.py::test_options_that_need_netem"
	)
fi
export RETRANSMON_TEST_TIME_SCALE=6  # an emulated CPU: Python and the verifier run ~10x slower
log=build/matrix/$kernel-pytest.log
.venv/bin/python -m pytest -q -p no:cacheprovider -o addopts="-ra" -s "${tests[@]}" 2>&1 | tee "$log" \
	| grep -E "^(IPv|SYN-ACK|live|closed|churn|flow labels|trace under|chaos|serve answered|[0-9]+ (passed|failed)|FAILED|ERROR)|WARNING" 
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] || grep -E "^(E  |FAILED|ERROR)" "$log" | head -40
echo "matrix-result $kernel $([ "$rc" -eq 0 ] && echo PASS || echo FAIL) ${hooks:-none} $counting"
exit "$rc"
