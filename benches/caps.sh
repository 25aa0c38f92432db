#!/usr/bin/env bash
# The connection-cap scenario (issue 13): 20 MTAs sharing one source address and one MX.
#
#   benches/caps.sh GAPROXY DURATION
#
# - caps-proxy:        through the proxy, reuse=yes, caps max_connections 2 per (source, MX):
#                      the MTAs wait for one of the two pooled connections;
# - caps-direct-own:   straight to the MX, each MTA with 1 connection of its own, sequential
#                      (20 connections at once: over the cap of 2);
# - caps-direct-split: straight to the MX, the cap split statically: 2 MTAs of the 20 send
#                      (what a cluster without the proxy does to stay under the cap).
# Every session carries 5 messages of 5 KB. Called by benches/run.sh.
set -euo pipefail
gaproxy=$1
dur=$2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

run() {
    local label=$1
    shift
    "$gaproxy" bench --label "$label" --one-source --messages 5 --size 5120 --duration "$dur" "$@" | tee "$out/$label"
}
get() {
    local v
    v=$(grep -s -h -e '^RESULT' -e '^CAPS' "$out/$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1)
    echo "${v:--}"
}

run caps-proxy --target proxy --reuse --cap 2 --concurrency 20
run caps-direct-own --target direct --concurrency 20
run caps-direct-split --target direct --concurrency 2

echo
echo "== caps summary (one source, one MX, sessions of 5 messages of 5 KB)"
for l in caps-proxy caps-direct-own caps-direct-split; do
    printf "   %-18s %9s msgs/s  MX connections %6s  most open at once %4s  msg p50/p99 %s/%s ms  cpu %s ms/msg\n" \
        "$l" "$(get $l msgs_per_s)" "$(get $l mx_connections)" "$(get $l mx_max_open)" \
        "$(get $l msg_p50_ms)" "$(get $l msg_p99_ms)" "$(get $l cpu_ms_per_msg)"
done
