#!/usr/bin/env bash
# greenarrow_proxy benchmarks (issue 7). Loopback only.
#
#   benches/run.sh            throughput and latency: proxy vs direct vs HAProxy on loopback,
#                             then at 40 ms RTT toward the MX (~1.5 minutes after the build)
#   benches/run.sh --latency  only the 40 ms RTT scenarios (~1.5 minutes)
#   benches/run.sh --scale    memory with 10,000 MTA sessions and idle pooled MX connections
#   benches/run.sh --profile  system calls per message (strace -c -f on the proxy)
#   benches/run.sh --passthrough  only the passthrough front-end scenarios (issue 24 part 2)
#
# Environment: BENCH_DURATION (default 5s per loopback scenario), BENCH_RTT (40ms),
# BENCH_RTT_DURATION (8s per scenario at that RTT), SCALE_SESSIONS (10000),
# SCALE_POOLED (4500: the test MX in the bench process needs two descriptors per
# connection and the open-files limit here is 20000), CARGO_TARGET_DIR (default target).
# Each ratio is printed with its target in brackets and "ok" or "MISSED".
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:-}
target_dir=${CARGO_TARGET_DIR:-target}
cargo build --release --quiet --bin greenarrow_proxy --bin gaproxy
# HAProxy in TCP mode is the peer the fresh-session and passthrough lines compare with:
# install Debian's when it is missing and we may (root with apt-get); else those lines say
# "skipped".
if ! command -v haproxy >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "== installing haproxy (Debian's) for the comparison lines"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy >/dev/null 2>&1 ||
        echo "== haproxy could not be installed: its lines will say skipped"
fi
gaproxy="$target_dir/release/gaproxy"
dur=${BENCH_DURATION:-5s}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Thousands of sockets: raise the soft limit on open files to the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

echo "== machine: $(nproc) CPU(s), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(uname -r)"
echo "== open files limit: $(ulimit -n)"

# run LABEL ARGS...: one scenario; its output is shown and kept.
run() {
    local label=$1
    shift
    "$gaproxy" bench --label "$label" "$@" | tee "$out/$label"
}

# get LABEL KEY: a value from the RESULT line of a scenario ("-" if missing).
get() {
    local v
    v=$(grep -s -h -e '^RESULT' -e '^CAPS' "$out/$1" | tr ' ' '\n' | sed -n "s/^$2=//p" | head -1)
    echo "${v:--}"
}

# ratio NAME A B OP TARGET [NOTE]: print A/B with its target, e.g. "[>= 0.8] ok", then NOTE
# (the CPU per message of the processes measured: see cpu).
ratio() {
    awk -v name="$1" -v a="$2" -v b="$3" -v op="$4" -v t="$5" -v note="${6:-}" 'BEGIN {
        if (a == "-" || b == "-" || b + 0 == 0) { printf "%-62s n/a     [%s %s] %s\n", name, op, t, note; exit }
        r = a / b
        ok = (op == ">=") ? (r >= t) : (r <= t)
        printf "%-62s %7.3f [%s %s] %s %s\n", name, r, op, t, ok ? "ok" : "MISSED", note
    }'
}

# cpu LABEL...: the CPU per message (user + system, /proc/<pid>/stat) of the proxy or HAProxy
# in each of these scenarios that ran one, e.g. "(CPU/msg: proxy-reuse 0.112 ms)".
cpu() {
    local l v notes=""
    for l in "$@"; do
        v=$(get "$l" cpu_ms_per_msg)
        [ "$v" = "-" ] && continue
        notes="$notes${notes:+, }$l $v ms"
    done
    [ -z "$notes" ] || echo "(CPU/msg: $notes)"
}

# check NAME VALUE OP TARGET UNIT
check() {
    awk -v name="$1" -v v="$2" -v op="$3" -v t="$4" -v unit="$5" 'BEGIN {
        if (v == "-") { printf "%-62s n/a [%s %s %s]\n", name, op, t, unit; exit }
        ok = (op == ">=") ? (v >= t) : (v <= t)
        printf "%-62s %9.1f %s [%s %s %s] %s\n", name, v, unit, op, t, unit, ok ? "ok" : "MISSED"
    }'
}

# ---- passthrough (issue 24 part 2) ----
# MTAs through the proxy's front-ends in mode: passthrough (a PROXY v2 header; SOCKS5 BIND
# and CONNECT as KumoMTA does), then SMTP to the MX as the direct client does: fresh
# sessions against direct and HAProxy TCP mode, 100 MB in 5 MB messages against direct, and
# the CPU per message of the proxy beside HAProxy's in the same run.
pt_common=(--concurrency 20 --size 5120 --duration "$dur")
pt_large=(--concurrency 4 --messages 5 --size 5000000 --sessions-per-mta 1 --duration 10m)
passthrough_scenarios() {
    # The references, unless this run has them already.
    [ -f "$out/direct-fresh" ] || run direct-fresh --target direct "${pt_common[@]}"
    if command -v haproxy >/dev/null; then
        [ -f "$out/haproxy-tcp" ] || run haproxy-tcp --target haproxy "${pt_common[@]}"
    fi
    [ -f "$out/direct-large" ] || run direct-large --target direct "${pt_large[@]}"
    run pt-proxy-v2-fresh --target proxy --passthrough proxy-v2 "${pt_common[@]}"
    run pt-socks5-fresh --target proxy --passthrough socks5 "${pt_common[@]}"
    run pt-proxy-v2-large --target proxy --passthrough proxy-v2 "${pt_large[@]}"
    # The same with splice off (splice: false): every byte copied, for comparison.
    run pt-proxy-v2-large-copy --target proxy --passthrough proxy-v2 --no-splice "${pt_large[@]}"
}
passthrough_ratios() {
    for l in direct-fresh haproxy-tcp pt-proxy-v2-fresh pt-socks5-fresh direct-large pt-proxy-v2-large pt-proxy-v2-large-copy; do
        [ -f "$out/$l" ] || continue
        printf "   %-22s %9s msgs/s %8s MB/s  new p50/p99 %s/%s ms  msg p50/p99 %s/%s ms  cpu %s s (%s ms per message)\n" \
            "$l" "$(get $l msgs_per_s)" "$(get $l mb_per_s)" \
            "$(get $l ready_new_p50_ms)" "$(get $l ready_new_p99_ms)" \
            "$(get $l msg_p50_ms)" "$(get $l msg_p99_ms)" "$(get $l cpu_s)" "$(get $l cpu_ms_per_msg)"
    done
    ratio "passthrough fresh (PROXY v2): proxy / direct" "$(get pt-proxy-v2-fresh msgs_per_s)" "$(get direct-fresh msgs_per_s)" ">=" 0.8 "$(cpu pt-proxy-v2-fresh)"
    if [ -f "$out/haproxy-tcp" ]; then
        ratio "passthrough fresh (PROXY v2): proxy / HAProxy TCP" "$(get pt-proxy-v2-fresh msgs_per_s)" "$(get haproxy-tcp msgs_per_s)" ">=" 1.0 "$(cpu pt-proxy-v2-fresh haproxy-tcp)"
        ratio "passthrough fresh (SOCKS5): proxy / HAProxy TCP" "$(get pt-socks5-fresh msgs_per_s)" "$(get haproxy-tcp msgs_per_s)" ">=" 1.0 "$(cpu pt-socks5-fresh haproxy-tcp)"
        ratio "proxy CPU per passthrough message / HAProxy's (PROXY v2)" "$(get pt-proxy-v2-fresh cpu_ms_per_msg)" "$(get haproxy-tcp cpu_ms_per_msg)" "<=" 1.0
        ratio "proxy CPU per passthrough message / HAProxy's (SOCKS5)" "$(get pt-socks5-fresh cpu_ms_per_msg)" "$(get haproxy-tcp cpu_ms_per_msg)" "<=" 1.0
    else
        echo "passthrough / HAProxy TCP mode: skipped (haproxy not installed)"
    fi
    ratio "passthrough 100 MB in 5 MB messages: proxy / direct (MB/s)" "$(get pt-proxy-v2-large mb_per_s)" "$(get direct-large mb_per_s)" ">=" 0.95 "$(cpu pt-proxy-v2-large pt-proxy-v2-large-copy)"
    printf "%-62s %s s with splice, %s s copying (for scale)\n" "passthrough 100 MB: proxy CPU" \
        "$(get pt-proxy-v2-large cpu_s)" "$(get pt-proxy-v2-large-copy cpu_s)"
}

if [ "$mode" = "--passthrough" ]; then
    passthrough_scenarios
    echo
    echo "== passthrough summary (20 MTAs, 5 KB messages, one message per SMTP session; 100 MB: 4 MTAs, 5 x 5 MB each)"
    passthrough_ratios
    exit 0
fi

if [ "$mode" = "--scale" ]; then
    sessions=${SCALE_SESSIONS:-10000}
    pooled=${SCALE_POOLED:-4500}
    run scale-plain --scale --scale-sessions "$sessions" --scale-pooled "$pooled"
    run scale-tls --scale --mx-tls --scale-sessions "$sessions" --scale-pooled "$pooled"
    echo
    echo "== scale summary ($sessions MTA sessions, $pooled idle pooled MX connections)"
    for l in scale-plain scale-tls; do
        peak=$(get $l rss_peak_kib)
        check "$l: proxy peak RSS" "$(awk -v k="$peak" 'BEGIN{ if (k=="-") print "-"; else print k/1024 }')" "<=" 1536 MiB
        check "$l: RSS per idle pooled MX connection" "$(get $l kib_per_pooled)" "<=" 40 KiB
        # The same without the stack pages the (still open) MTA sessions' threads touched
        # while setting up the MX connection (a TLS handshake goes deeper: ~12 KiB).
        check "$l: the same, without session stack growth" "$(get $l kib_per_pooled_without_stacks)" "<=" 40 KiB
    done
    exit 0
fi

if [ "$mode" = "--profile" ]; then
    command -v strace >/dev/null || { echo "strace not installed (apt-get install strace)"; exit 1; }
    run strace-fresh --target proxy --concurrency 20 --duration "$dur" --strace "$out/strace-fresh.txt"
    run strace-reuse --target proxy --concurrency 20 --duration "$dur" --reuse --strace "$out/strace-reuse.txt"
    run strace-tls-reuse --target proxy --concurrency 20 --duration "$dur" --reuse --mx-tls --strace "$out/strace-tls-reuse.txt"
    for l in fresh reuse tls-reuse; do
        echo "== strace -c -f of the proxy, $l (top 12 by calls)"
        sed -n '1,2p' "$out/strace-$l.txt"
        tail -n +3 "$out/strace-$l.txt" | grep -v -e '^-' -e 'total$' | sort -k4 -n -r | head -12
        tail -n 1 "$out/strace-$l.txt"
    done
    exit 0
fi

rtt=${BENCH_RTT:-40ms}
rtt_dur=${BENCH_RTT_DURATION:-8s}
loopback=yes
[ "$mode" = "--latency" ] && loopback=no

common=(--concurrency 20 --size 5120 --duration "$dur")
if [ $loopback = yes ]; then
run direct-fresh --target direct "${common[@]}"
run proxy-fresh --target proxy "${common[@]}"
if command -v haproxy >/dev/null; then
    run haproxy-tcp --target haproxy "${common[@]}"
else
    echo "== HAProxy not installed: the HAProxy comparison is skipped"
fi
run proxy-reuse --target proxy --reuse "${common[@]}"
run direct-tls --target direct --mx-tls "${common[@]}"
run proxy-tls-fresh --target proxy --mx-tls "${common[@]}"
run proxy-tls-reuse --target proxy --mx-tls --reuse "${common[@]}"
# 100 MB: 4 MTAs, one session each of 5 messages of 5 MB.
large=(--concurrency 4 --messages 5 --size 5000000 --sessions-per-mta 1 --duration 10m)
run direct-large --target direct "${large[@]}"
run proxy-large --target proxy "${large[@]}"
passthrough_scenarios
benches/caps.sh "$gaproxy" "$dur"
fi

# At real network latency (issue 15): a delay relay in front of the test MX adds $rtt of
# round trip (half each way per chunk, one more round trip for a new connection), for the
# direct client and the proxy alike. Latency-bound: meaningful on a busy machine too.
lat=(--concurrency 20 --size 5120 --duration "$rtt_dur" --rtt "$rtt")
run rtt-direct-tls --target direct --mx-tls "${lat[@]}"
run rtt-proxy-tls-reuse --target proxy --mx-tls --reuse "${lat[@]}"
run rtt-direct --target direct "${lat[@]}"
run rtt-proxy-reuse --target proxy --reuse "${lat[@]}"
# ---- pipelined BDAT (issue 24 part 1) ----
# One round trip per message: MAIL, RCPT, BDAT n LAST and the message in one write, then the
# three replies (RFC 3030 with PIPELINING, as Exim sends it); the proxy with reuse against
# direct delivery doing the same on its own STARTTLS session.
run rtt-direct-tls-bdat --target direct --mx-tls --bdat-pipelined "${lat[@]}"
run rtt-proxy-tls-reuse-bdat --target proxy --mx-tls --reuse --bdat-pipelined "${lat[@]}"
# Under a connection cap (issue 13): 20 MTAs, one source, one MX, sessions of 5 messages;
# through the proxy with caps max_connections 2, against the cap split statically (2 MTAs of
# the 20 send: what a cluster without the proxy does to stay under it), and 20 MTAs with a
# connection each (over the cap: shown for scale).
lcap=(--one-source --messages 5 --size 5120 --duration "$rtt_dur" --rtt "$rtt")
run rtt-caps-proxy --target proxy --reuse --cap 2 --concurrency 20 "${lcap[@]}"
run rtt-caps-direct-split --target direct --concurrency 2 "${lcap[@]}"
run rtt-caps-direct-own --target direct --concurrency 20 "${lcap[@]}"

echo
echo "== summary (msgs/s unless stated; 20 MTAs, 5 KB messages, one message per SMTP session)"
for l in direct-fresh proxy-fresh haproxy-tcp proxy-reuse direct-tls proxy-tls-fresh proxy-tls-reuse direct-large proxy-large \
    rtt-direct-tls rtt-proxy-tls-reuse rtt-direct rtt-proxy-reuse rtt-caps-proxy rtt-caps-direct-split rtt-caps-direct-own; do
    [ -f "$out/$l" ] || continue
    printf "   %-19s %9s msgs/s %8s MB/s  new p50/p99 %s/%s ms  reused p50/p99 %s/%s ms  msg p50/p99 %s/%s ms  cpu %s s (%s ms/msg)  peak RSS %s KiB\n" \
        "$l" "$(get $l msgs_per_s)" "$(get $l mb_per_s)" \
        "$(get $l ready_new_p50_ms)" "$(get $l ready_new_p99_ms)" \
        "$(get $l ready_reused_p50_ms)" "$(get $l ready_reused_p99_ms)" \
        "$(get $l msg_p50_ms)" "$(get $l msg_p99_ms)" "$(get $l cpu_s)" "$(get $l cpu_ms_per_msg)" "$(get $l rss_peak_kib)"
done
for l in rtt-direct-tls rtt-proxy-tls-reuse rtt-direct rtt-proxy-reuse; do
    printf "   %-19s session start to 250 after the dot: new p50/p99 %s/%s ms, reused p50/p99 %s/%s ms; MX connections %s (%s per message)\n" \
        "$l" "$(get $l first_new_p50_ms)" "$(get $l first_new_p99_ms)" \
        "$(get $l first_reused_p50_ms)" "$(get $l first_reused_p99_ms)" \
        "$(get $l mx_connections)" "$(get $l mx_conns_per_msg)"
done
echo
if [ $loopback = yes ]; then
ratio "fresh MX connections: proxy / direct" "$(get proxy-fresh msgs_per_s)" "$(get direct-fresh msgs_per_s)" ">=" 0.8 "$(cpu proxy-fresh)"
if [ -f "$out/haproxy-tcp" ]; then
    ratio "fresh MX connections: proxy / HAProxy TCP mode" "$(get proxy-fresh msgs_per_s)" "$(get haproxy-tcp msgs_per_s)" ">=" 1.0 "$(cpu proxy-fresh haproxy-tcp)"
else
    echo "fresh MX connections: proxy / HAProxy TCP mode                  skipped (haproxy not installed)"
fi
ratio "reuse: proxy / direct (fresh)" "$(get proxy-reuse msgs_per_s)" "$(get direct-fresh msgs_per_s)" ">=" 2.0 "$(cpu proxy-reuse)"
ratio "TLS to the MX: proxy with reuse / direct STARTTLS each session" "$(get proxy-tls-reuse msgs_per_s)" "$(get direct-tls msgs_per_s)" ">=" 3.0 "$(cpu proxy-tls-reuse)"
ratio "connect-to-ready p50: reused / fresh STARTTLS" "$(get proxy-tls-reuse ready_reused_p50_ms)" "$(get proxy-tls-fresh ready_new_p50_ms)" "<=" 0.1 "$(cpu proxy-tls-reuse proxy-tls-fresh)"
ratio "100 MB in 5 MB messages: proxy / direct (MB/s)" "$(get proxy-large mb_per_s)" "$(get direct-large mb_per_s)" ">=" 0.9 "$(cpu proxy-large)"
passthrough_ratios
fi
ratio "$rtt RTT, STARTTLS MX: proxy with reuse / direct STARTTLS" "$(get rtt-proxy-tls-reuse msgs_per_s)" "$(get rtt-direct-tls msgs_per_s)" ">=" 4 "$(cpu rtt-proxy-tls-reuse)"
check "$rtt RTT, STARTTLS MX: MX connections per 20 msgs via proxy" \
    "$(awk -v c="$(get rtt-proxy-tls-reuse mx_conns_per_msg)" 'BEGIN{ if (c=="-") print "-"; else print c*20 }')" "<=" 1 conn
ratio "$rtt RTT, plaintext MX: proxy with reuse / direct" "$(get rtt-proxy-reuse msgs_per_s)" "$(get rtt-direct msgs_per_s)" ">=" 2.5 "$(cpu rtt-proxy-reuse)"
ratio "$rtt RTT, CONNECT to 250 after dot p50: reused / direct TLS" "$(get rtt-proxy-tls-reuse first_reused_p50_ms)" "$(get rtt-direct-tls first_new_p50_ms)" "<=" 0.3 "$(cpu rtt-proxy-tls-reuse)"
ratio "$rtt RTT, CONNECT to 250 after dot p99: reused / direct TLS" "$(get rtt-proxy-tls-reuse first_reused_p99_ms)" "$(get rtt-direct-tls first_new_p99_ms)" "<=" 0.3 "$(cpu rtt-proxy-tls-reuse)"
ratio "$rtt RTT, cap 2: proxy (20 MTAs) / direct static split (2 MTAs)" "$(get rtt-caps-proxy msgs_per_s)" "$(get rtt-caps-direct-split msgs_per_s)" ">=" 1.0 "$(cpu rtt-caps-proxy)"
check "$rtt RTT, cap 2: most MX connections open at once via proxy" "$(get rtt-caps-proxy mx_max_open)" "<=" 2 conn
printf "%-62s %s msgs/s, %s open at once (over the cap; for scale)\n" "$rtt RTT, cap 2: direct, 20 MTAs with a connection each" \
    "$(get rtt-caps-direct-own msgs_per_s)" "$(get rtt-caps-direct-own mx_max_open)"
# ---- pipelined BDAT (issue 24 part 1) ----
for l in rtt-direct-tls-bdat rtt-proxy-tls-reuse-bdat; do
    [ -f "$out/$l" ] || continue
    printf "   %-24s %9s msgs/s  msg p50/p99 %s/%s ms  session start to the reply after the last chunk: new p50/p99 %s/%s ms, reused p50/p99 %s/%s ms; cpu %s ms/msg\n" \
        "$l" "$(get $l msgs_per_s)" "$(get $l msg_p50_ms)" "$(get $l msg_p99_ms)" \
        "$(get $l first_new_p50_ms)" "$(get $l first_new_p99_ms)" \
        "$(get $l first_reused_p50_ms)" "$(get $l first_reused_p99_ms)" "$(get $l cpu_ms_per_msg)"
done
# The ceiling is ~8x: direct pays connect, banner, EHLO, STARTTLS, the TLS handshake, EHLO,
# the flight and QUIT per message; the proxy with reuse the flight alone.
ratio "$rtt RTT, STARTTLS MX, 20 MTAs, pipelined BDAT: proxy reuse / direct" "$(get rtt-proxy-tls-reuse-bdat msgs_per_s)" "$(get rtt-direct-tls-bdat msgs_per_s)" ">=" 6 "$(cpu rtt-proxy-tls-reuse-bdat)"
ratio "$rtt RTT, CONNECT to the reply after the last chunk p50: reused / direct TLS" "$(get rtt-proxy-tls-reuse-bdat first_reused_p50_ms)" "$(get rtt-direct-tls-bdat first_new_p50_ms)" "<=" 0.15 "$(cpu rtt-proxy-tls-reuse-bdat)"
ratio "$rtt RTT, CONNECT to the reply after the last chunk p99: reused / direct TLS" "$(get rtt-proxy-tls-reuse-bdat first_reused_p99_ms)" "$(get rtt-direct-tls-bdat first_new_p99_ms)" "<=" 0.15 "$(cpu rtt-proxy-tls-reuse-bdat)"
