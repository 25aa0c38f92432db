#!/usr/bin/env bash
# The keepalived failover drill (issue 16; docs/HA.md).
#
# Builds, as network namespaces on this machine: two proxy hosts (a, b), an MX host and an MTA
# host, each with a veth into a bridge that lives in a fifth namespace; addresses from the
# benchmarking range 198.18.0.0/24 exist inside these namespaces only. keepalived (VRRPv3,
# unicast) runs in a and b with one instance carrying the listener's virtual address and the
# two egress addresses, and tracks the proxy process of its host. The proxies listen on the
# virtual address (listen_freebind) and list the egress addresses as source_addresses. The
# MTA host runs STREAMS loops of `gaproxy send`, each message with a unique Message-ID and
# retried until the MTA is told it was accepted; once KILL_AT messages are accepted, the active
# proxy (on a) gets SIGKILL; the addresses move to b, which uses them at once. The proxy on a
# is started again (as systemd would) and, once SWITCH_AT messages are accepted, keepalived on
# b is stopped (planned maintenance): the addresses move back to a while the proxy on b keeps
# running, so it must let go of them (pooled connections closed, 451 source_not_local).
# Checks: the addresses moved each time; every message accepted in the MTA's view is at the MX
# (lost = 0); every message was eventually accepted; duplicates (the MX accepted, the reply was
# lost) are counted and each must be explained by such an attempt; the failover time is from
# the kill to the first accepted delivery that started after it. One line sums it up:
#   ha drill: sent N, accepted-and-delivered N, lost 0, duplicates D, failover T ms
# Exit: 0 pass, 1 fail, 77 skipped (no root, no network namespaces, no keepalived).
#
# Environment: HA_DRILL_MESSAGES (default 300), HA_DRILL_KILL_AT (default a third),
# HA_DRILL_SWITCH_AT (default two thirds; 0: no switch back),
# HA_DRILL_STREAMS (default 4), HA_DRILL_CLIENT_LIST=1 (the MTA lists the virtual address,
# then b's and a's own addresses: gaproxy send's failover), HA_DRILL_BIN (a directory with
# built greenarrow_proxy and gaproxy; default: cargo build, target/debug), HA_DRILL_KEEP=1
# keeps the work directory (it is kept anyway on failure), HA_DRILL_VERBOSE=1 prints each step.
# shellcheck disable=SC2317 # functions run from traps, wait_for and other namespaces
# shellcheck disable=SC2016 # single-quoted programs for sh -c and bash -c, on purpose
set -euo pipefail
cd "$(dirname "$0")/../.."

N=${HA_DRILL_MESSAGES:-300}
KILL_AT=${HA_DRILL_KILL_AT:-$((N / 3))}
SWITCH_AT=${HA_DRILL_SWITCH_AT:-$((2 * N / 3))}
STREAMS=${HA_DRILL_STREAMS:-4}
# A message not accepted after this long (seconds) fails the drill; so does a stream still
# running DEADLINE_S seconds after it started.
GIVE_UP_S=30
DEADLINE_S=90

say() { if [ "${HA_DRILL_VERBOSE:-0}" = 1 ]; then echo "ha drill: $*" >&2; fi; }
skip() { echo "ha drill: skipped: $*"; exit 77; }
fail() { echo "ha drill: FAILED: $*" >&2; FAILED=1; exit 1; }
now_ms() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }

# Wait up to $1 seconds for the command that follows to succeed (state that only shows in
# polling: VRRP state, addresses, a log line).
wait_for() {
    local limit=$1 start
    shift
    start=$(now_ms)
    until "$@"; do
        (($(now_ms) - start < limit * 1000)) || return 1
        sleep 0.05
    done
}

# ---- preconditions ------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
command -v ip >/dev/null || skip "no ip(8) (iproute2)"
PROBE="gha-probe-$$"
ip netns add "$PROBE" 2>/dev/null || skip "ip netns add does not work here (no permission or no kernel support)"
ip netns del "$PROBE"
MISSING=()
command -v keepalived >/dev/null || MISSING+=(keepalived)
command -v openssl >/dev/null || MISSING+=(openssl)
command -v ss >/dev/null || MISSING+=(iproute2)
if [ ${#MISSING[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || skip "${MISSING[*]} not installed and there is no apt-get"
    echo "ha drill: installing ${MISSING[*]}" >&2
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${MISSING[@]}" >/dev/null ||
        skip "cannot install ${MISSING[*]}"
fi

if [ -z "${HA_DRILL_BIN:-}" ]; then
    cargo build --quiet --bins
    HA_DRILL_BIN=$PWD/target/debug
fi
PROXY_BIN=$HA_DRILL_BIN/greenarrow_proxy
GAPROXY=$HA_DRILL_BIN/gaproxy
if [ ! -x "$PROXY_BIN" ] || [ ! -x "$GAPROXY" ]; then fail "no binaries in $HA_DRILL_BIN"; fi

# ---- names, addresses, clean-up -----------------------------------------------------------
# Namespaces are named gha<pid>-<host>: a leftover of a run that was killed (its pid is gone)
# is removed here, with the processes still inside it; a live run's are left alone.
for ns in $(ip netns list | awk '{print $1}' | grep -E '^gha[0-9]+-' || true); do
    owner=${ns#gha}
    owner=${owner%%-*}
    if ! kill -0 "$owner" 2>/dev/null; then
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
        ip netns del "$ns" 2>/dev/null || true
    fi
done

P="gha$$"
NS_A=$P-a NS_B=$P-b NS_MX=$P-mx NS_MTA=$P-mta NS_BR=$P-br
ALL_NS=("$NS_A" "$NS_B" "$NS_MX" "$NS_MTA" "$NS_BR")
NET=198.18.0
IP_A=$NET.11 IP_B=$NET.12 IP_MX=$NET.25 IP_MTA=$NET.40
VIP=$NET.100
EGRESS=("$NET.101" "$NET.102")
PORT=807
W=$(mktemp -d /tmp/ha-drill.XXXXXX)
FAILED=0

cleanup() {
    local ns pid
    disown -a 2>/dev/null || true # no "Killed" reports for the jobs stopped here
    for ns in "${ALL_NS[@]}"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
    done
    for ns in "${ALL_NS[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
    if [ "$FAILED" = 1 ] || [ "${HA_DRILL_KEEP:-0}" = 1 ]; then
        echo "ha drill: logs kept in $W" >&2
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT
trap 'FAILED=1; exit 1' INT TERM
# Any failing command (set -e) counts as a failure, so its logs are kept.
trap 'FAILED=1' ERR

# ---- network ------------------------------------------------------------------------------
say "namespaces $P-*"
for ns in "${ALL_NS[@]}"; do ip netns add "$ns"; done
ip -n "$NS_BR" link add br0 type bridge
ip -n "$NS_BR" link set br0 up
plug() { # namespace, address, short name
    ip link add eth0 netns "$1" type veth peer name "p-$3" netns "$NS_BR"
    ip -n "$NS_BR" link set "p-$3" master br0 up
    ip -n "$1" link set lo up
    ip -n "$1" addr add "$2/24" dev eth0
    ip -n "$1" link set eth0 up
}
plug "$NS_A" "$IP_A" a
plug "$NS_B" "$IP_B" b
plug "$NS_MX" "$IP_MX" mx
plug "$NS_MTA" "$IP_MTA" mta

# ---- the MX -------------------------------------------------------------------------------
ip netns exec "$NS_MX" "$GAPROXY" testmx --any-address --listen "$IP_MX:25" \
    --hostname mx.drill.invalid >"$W/mx.log" 2>&1 &
wait_for 20 grep -qs "listening" "$W/mx.log" || fail "the test MX did not start: $(cat "$W/mx.log")"

# ---- the proxies --------------------------------------------------------------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -subj "/CN=proxy.drill.invalid" -addext "subjectAltName=IP:$VIP,IP:$IP_A,IP:$IP_B" \
    -addext "basicConstraints=critical,CA:FALSE" \
    -keyout "$W/key.pem" -out "$W/cert.pem" 2>/dev/null
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$W/secret"
chmod 600 "$W/secret" "$W/key.pem"
for h in a b; do
    if [ $h = a ]; then own=$IP_A; else own=$IP_B; fi
    cat >"$W/proxy-$h.yaml" <<EOF
listen: ["$VIP:$PORT", "$own:$PORT"]
listen_freebind: true
allow_from: [$NET.0/24]
auth_shared_secret_file: secret
tls_certificate: cert.pem
tls_private_key: key.pem
source_addresses: [${EGRESS[0]}, ${EGRESS[1]}]
destination_ports: [25]
destination_allow: [$IP_MX/32]
log_verbose: true
EOF
done
ip netns exec "$NS_A" "$PROXY_BIN" --config "$W/proxy-a.yaml" >>"$W/proxy-a.log" 2>&1 &
PID_A=$!
ip netns exec "$NS_B" "$PROXY_BIN" --config "$W/proxy-b.yaml" >"$W/proxy-b.log" 2>&1 &
PID_B=$!

# ---- keepalived ---------------------------------------------------------------------------
write_check() { # host, proxy pid: replaced atomically, keepalived runs it every second
    printf '#!/bin/sh\n[ -e /proc/%d/status ] && ! grep -q "^State:[[:space:]]*Z" /proc/%d/status\n' \
        "$2" "$2" >"$W/check-$1.sh.new"
    chmod 755 "$W/check-$1.sh.new"
    mv "$W/check-$1.sh.new" "$W/check-$1.sh"
}
# keepalived tracks the proxy of its host with a script that says whether the process is
# alive (a zombie is not). track_process would be the choice on a real host, but it needs the
# kernel's process-events connector, which only the initial network namespace has.
for h in a b; do
    if [ $h = a ]; then self=$IP_A peer=$IP_B prio=150 pid=$PID_A; else self=$IP_B peer=$IP_A prio=100 pid=$PID_B; fi
    write_check "$h" "$pid"
    cat >"$W/keepalived-$h.conf" <<EOF
global_defs {
    router_id $P-$h
    vrrp_version 3
    script_user root
}
vrrp_script proxy {
    script "$W/check-$h.sh"
    interval 1
    fall 1
    rise 1
}
vrrp_instance proxy {
    state BACKUP
    nopreempt
    interface eth0
    virtual_router_id 51
    priority $prio
    advert_int 0.2
    unicast_src_ip $self
    unicast_peer {
        $peer
    }
    virtual_ipaddress {
        $VIP/32 dev eth0
        ${EGRESS[0]}/32 dev eth0
        ${EGRESS[1]}/32 dev eth0
    }
    track_script {
        proxy
    }
}
EOF
done
start_keepalived() {
    exec ip netns exec "$1" keepalived --dont-fork --log-console --log-detail --vrrp \
        --use-file "$W/keepalived-$2.conf" --pid "$W/keepalived-$2.pid" \
        --vrrp_pid "$W/keepalived-$2-vrrp.pid" >>"$W/keepalived-$2.log" 2>&1
}
has_addr() { [[ $(ip -n "$1" -4 addr show dev eth0) == *"inet $2/"* ]]; }
has_all() { has_addr "$1" "$VIP" && has_addr "$1" "${EGRESS[0]}" && has_addr "$1" "${EGRESS[1]}"; }
has_none() { ! has_addr "$1" "$VIP" && ! has_addr "$1" "${EGRESS[0]}" && ! has_addr "$1" "${EGRESS[1]}"; }

start_keepalived "$NS_A" a &
wait_for 20 has_all "$NS_A" || fail "keepalived on a did not take the addresses: $(tail -5 "$W/keepalived-a.log")"
start_keepalived "$NS_B" b &
KA_B=$!
wait_for 20 grep -qs "Entering BACKUP STATE" "$W/keepalived-b.log" ||
    fail "keepalived on b did not become backup: $(tail -5 "$W/keepalived-b.log")"
has_none "$NS_B" || fail "b holds addresses while a is master"
listening() { [ -n "$(ip netns exec "$1" ss -Hltn "src $VIP:$PORT")" ]; }
wait_for 20 listening "$NS_A" || fail "the proxy on a does not listen: $(tail -5 "$W/proxy-a.log")"
wait_for 20 listening "$NS_B" || fail "the proxy on b does not listen on the absent address: $(tail -5 "$W/proxy-b.log")"
say "a is master, both proxies listen on $VIP:$PORT"

# One delivery through b's own address (an MTA's second proxy): b started without the egress
# addresses, so it answers 451 source_not_local (transient) and keeps running.
probe() { # proxy address, Message-ID, output file, [--reuse]
    ip netns exec "$NS_MTA" "$GAPROXY" send --proxy "$1:$PORT" --ca-file "$W/cert.pem" ${4:+"$4"} \
        --secret-file "$W/secret" --source "${EGRESS[0]}" --mx "$IP_MX" --port 25 \
        --ehlo mta.drill.invalid --message-file <(printf 'Message-ID: <%s@drill.invalid>\r\n\r\nprobe\r\n' "$2") \
        --timeout 5s >"$3" 2>&1
}
! probe "$IP_B" ha-probe-before "$W/probe-before.log" || fail "b delivered from an address it does not have"
grep -q "451 4.3.0 source_not_local" "$W/probe-before.log" ||
    fail "b's answer for an absent source is not 451 source_not_local: $(tail -3 "$W/probe-before.log")"
listening "$NS_B" || fail "the proxy on b stopped after a request for an absent source"

# ---- the MTA stream -----------------------------------------------------------------------
mkdir -p "$W/msg" "$W/mta"
: >"$W/accepted.log"
: >"$W/attempts.log"
: >"$W/given-up.log"
# One stream: messages k, k+STREAMS, ...; each retried until accepted. Accepted = the MTA
# saw a 2xx reply to the end of data (whatever happens to QUIT afterwards), as an MTA
# counts it. Lines are appended with one write each (shorter than PIPE_BUF).
stream() {
    local k=$1 id attempt started t0 t1 rc out src accepted p proxies=()
    for p in $PROXIES; do proxies+=(--proxy "$p"); done
    for ((id = k; id <= N; id += STREAMS)); do
        printf 'From: <drill@mta.drill.invalid>\r\nTo: <rcpt@mx.drill.invalid>\r\nSubject: ha drill %d\r\nMessage-ID: <ha-%d@drill.invalid>\r\n\r\n' "$id" "$id" >"$W/msg/$id"
        for ((l = 0; l < 24; l++)); do
            printf 'message %d line %d abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz\r\n' "$id" "$l"
        done >>"$W/msg/$id"
        src=${EGRESS[$((id % 2))]}
        attempt=0
        started=$(now_ms)
        while :; do
            attempt=$((attempt + 1))
            t0=$(now_ms)
            out=$W/mta/$id.$attempt
            rc=0
            "$GAPROXY" send "${proxies[@]}" --ca-file "$W/cert.pem" --secret-file "$W/secret" \
                --source "$src" --mx "$IP_MX" --port 25 --ehlo mta.drill.invalid --reuse \
                --from drill@mta.drill.invalid --to rcpt@mx.drill.invalid \
                --message-file "$W/msg/$id" --timeout 5s >"$out" 2>&1 || rc=$?
            t1=$(now_ms)
            accepted=$(awk '/^C: <[0-9]+ octets of message data>/ { d = 1; next }
                            d && /^S: / { print (substr($0, 4, 1) == "2") ? "yes" : "no"; exit }' "$out")
            echo "$id $attempt $t0 $t1 $rc ${accepted:-no}" >>"$W/attempts.log"
            if [ "$accepted" = yes ]; then
                echo "$id" >>"$W/accepted.log"
                rm -f "$out"
                break
            fi
            if (($(now_ms) - started > GIVE_UP_S * 1000 || $(now_ms) > DEADLINE)); then
                echo "$id" >>"$W/given-up.log"
                break
            fi
            sleep 0.05 # back-off before the retry
        done
    done
}
export -f stream now_ms
DEADLINE=$(($(now_ms) + DEADLINE_S * 1000))
PROXIES="$VIP:$PORT"
if [ "${HA_DRILL_CLIENT_LIST:-0}" = 1 ]; then PROXIES="$VIP:$PORT $IP_B:$PORT $IP_A:$PORT"; fi
export N STREAMS W GAPROXY VIP PORT IP_MX GIVE_UP_S DEADLINE PROXIES
export EGRESS0=${EGRESS[0]} EGRESS1=${EGRESS[1]}
STREAM_PIDS=()
for ((k = 1; k <= STREAMS; k++)); do
    ip netns exec "$NS_MTA" bash -c 'EGRESS=("$EGRESS0" "$EGRESS1"); stream '"$k" &
    STREAM_PIDS+=($!)
done

# Wait until COUNT messages are accepted: read the MTA's log as it grows.
accepted_at_least() {
    timeout "$DEADLINE_S" sh -c 'tail -n +1 -f "$1" | head -n "$2" >/dev/null' - "$W/accepted.log" "$1" ||
        fail "fewer than $1 messages accepted within ${DEADLINE_S}s: $(tail -3 "$W/attempts.log")"
}
# The first accepted delivery that started at or after $1 (ms): when it ended, or nothing.
first_accepted_after() {
    awk -v k="$1" '$6 == "yes" && $3 >= k && (m == "" || $4 < m) { m = $4 } END { print m }' "$W/attempts.log"
}
((KILL_AT >= 1 && KILL_AT < N)) || fail "HA_DRILL_KILL_AT must be between 1 and N - 1"
((SWITCH_AT == 0 || (SWITCH_AT > KILL_AT && SWITCH_AT < N))) ||
    fail "HA_DRILL_SWITCH_AT must be 0 or between KILL_AT and N - 1"

# 1. The active proxy dies.
accepted_at_least "$KILL_AT"
T_KILL=$(now_ms)
kill -9 "$PID_A"
say "SIGKILL to the proxy on a after $KILL_AT accepted messages"
wait "$PID_A" 2>/dev/null || true
wait_for 10 has_all "$NS_B" || fail "the addresses did not move to b: $(ip -n "$NS_B" -4 -br addr show dev eth0)"
say "the addresses are on b $(($(now_ms) - T_KILL)) ms after the kill"
has_none "$NS_A" || fail "a still holds addresses: $(ip -n "$NS_A" -4 -br addr show dev eth0)"
# b uses them at once, also through its own address (no restart, no reload).
probe "$IP_B" ha-probe-after "$W/probe-after.log" ||
    fail "b cannot deliver from the addresses it took over: $(tail -3 "$W/probe-after.log")"

if ((SWITCH_AT > 0)); then
    # 2. The proxy on a comes back (systemd's Restart=); keepalived on a goes from FAULT to
    # BACKUP and, with nopreempt, leaves the addresses on b.
    ip netns exec "$NS_A" "$PROXY_BIN" --config "$W/proxy-a.yaml" >>"$W/proxy-a.log" 2>&1 &
    PID_A=$!
    write_check a "$PID_A"
    wait_for 20 listening "$NS_A" || fail "the proxy on a did not start again: $(tail -3 "$W/proxy-a.log")"
    backup_again() { [ "$(grep -c "Entering BACKUP STATE" "$W/keepalived-a.log")" -ge 2 ]; }
    wait_for 20 backup_again || fail "keepalived on a did not leave FAULT: $(tail -3 "$W/keepalived-a.log")"
    has_all "$NS_B" || fail "the addresses left b when a came back (nopreempt)"

    # 3. Planned switch back: keepalived on b stops (SIGTERM: it removes the addresses and
    # hands over at once); the proxy on b keeps running.
    accepted_at_least "$SWITCH_AT"
    [ "$(wc -l <"$W/accepted.log")" -lt "$N" ] || fail "the stream ended before the switch back: raise HA_DRILL_MESSAGES"
    T_SWITCH=$(now_ms)
    kill -TERM "$KA_B"
    wait_for 10 has_all "$NS_A" || fail "the addresses did not move back to a"
    T_ON_A=$(now_ms)
    wait "$KA_B" 2>/dev/null || true
    has_none "$NS_B" || fail "b still holds addresses after keepalived stopped"
    say "switch back: the addresses are on a $((T_ON_A - T_SWITCH)) ms after SIGTERM to keepalived on b"
fi

for pid in "${STREAM_PIDS[@]}"; do wait "$pid"; done
T_END=$(now_ms)
say "stream done in $((T_END - T_KILL)) ms after the kill"

# ---- checks -------------------------------------------------------------------------------
grep -q "Entering FAULT STATE" "$W/keepalived-a.log" || fail "keepalived on a did not notice the dead proxy"
grep -q "Entering MASTER STATE" "$W/keepalived-b.log" || fail "keepalived on b did not become master"
if ((SWITCH_AT > 0)); then
    if ! has_all "$NS_A" || ! has_none "$NS_B"; then fail "the addresses are not back on a alone"; fi
    # b let go: its pooled connections from the addresses are closed (a request asking for
    # reuse, with the stream's pool key, would otherwise get one whose replies now go to a),
    # and requests for them get 451 source_not_local at once.
    ! probe "$IP_B" ha-probe-gone "$W/probe-gone.log" --reuse || fail "b delivered from an address it no longer has"
    grep -q "451 4.3.0 source_not_local" "$W/probe-gone.log" ||
        fail "b's answer for an address that left is not 451 source_not_local: $(tail -3 "$W/probe-gone.log")"
    grep -q "source address ${EGRESS[0]} left the host" "$W/proxy-b.log" ||
        fail "the proxy on b did not notice that ${EGRESS[0]} left"
    listening "$NS_B" || fail "the proxy on b stopped when the addresses left"
    FIRST_BACK=$(first_accepted_after "$T_ON_A")
    [ -n "$FIRST_BACK" ] || fail "no delivery was accepted through a after the switch back"
else
    has_all "$NS_B" || fail "the addresses are not on b: $(ip -n "$NS_B" -4 -br addr show dev eth0)"
    has_none "$NS_A" || fail "a holds addresses again: $(ip -n "$NS_A" -4 -br addr show dev eth0)"
fi

sort -u "$W/accepted.log" >"$W/accepted.ids"
ACCEPTED=$(wc -l <"$W/accepted.ids")
mx_ids() { sed -n 's/.*Message-ID: <ha-\([0-9]*\)@drill.invalid>$/\1/p' "$W/mx.log"; }
# The test MX prints from its own thread: give it until every accepted message shows up.
mx_has_all() { [ "$(mx_ids | sort -n -u | wc -l)" -ge "$ACCEPTED" ]; }
wait_for 10 mx_has_all || true
mx_ids | sort >"$W/mx.ids"
sort -u "$W/mx.ids" >"$W/mx.unique"
LOST=$(comm -23 "$W/accepted.ids" "$W/mx.unique" | wc -l)
DELIVERED=$(comm -12 "$W/accepted.ids" "$W/mx.unique" | wc -l)
DUPLICATES=$(($(wc -l <"$W/mx.ids") - $(wc -l <"$W/mx.unique")))
NEVER=$((N - ACCEPTED))
# Unexpected at the MX: a message the MTA never sent (cannot happen) or from another source.
STRANGERS=$(comm -13 <(seq 1 "$N" | sort) "$W/mx.unique" | wc -l)
BAD_PEERS=$(awk -v a="${EGRESS[0]}" -v b="${EGRESS[1]}" '/^message from / {
    split($3, p, ":"); if (p[1] != a && p[1] != b) n++ } END { print n + 0 }' "$W/mx.log")
# Failover: from the kill to the end of the first accepted attempt that started after it
# (that one can only have gone through b).
FIRST_AFTER=$(first_accepted_after "$T_KILL")
[ -n "$FIRST_AFTER" ] || fail "no delivery was accepted after the kill"
FAILOVER=$((FIRST_AFTER - T_KILL))
ATTEMPTS=$(wc -l <"$W/attempts.log")
FAILED_ATTEMPTS=$(awk '$6 != "yes"' "$W/attempts.log" | wc -l)

echo "ha drill: sent $N, accepted-and-delivered $DELIVERED, lost $LOST, duplicates $DUPLICATES, failover $FAILOVER ms"
say "$ATTEMPTS attempts, $FAILED_ATTEMPTS not accepted (retried); stream ended $((T_END - T_KILL)) ms after the kill"
[ "$LOST" = 0 ] || fail "$LOST message(s) accepted by the MTA are not at the MX: $(comm -23 "$W/accepted.ids" "$W/mx.unique" | head -5 | tr '\n' ' ')"
[ "$NEVER" = 0 ] || fail "$NEVER message(s) were never accepted: $(tr '\n' ' ' <"$W/given-up.log" | head -c 200)"
[ "$STRANGERS" = 0 ] || fail "$STRANGERS message(s) at the MX were never sent"
# A duplicate is only acceptable where SMTP cannot avoid it: an attempt that sent the whole
# message and did not get the reply (its transcript is kept, accepted ones are removed).
for id in $(uniq -d "$W/mx.ids"); do
    grep -q "octets of message data" "$W"/mta/"$id".* 2>/dev/null ||
        fail "message $id is at the MX more than once, but no attempt of it lost its reply"
done
[ "$BAD_PEERS" = 0 ] || fail "$BAD_PEERS message(s) reached the MX from outside the egress addresses"
exit 0
