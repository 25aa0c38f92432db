# Helpers of tests/systemd/run.sh (sourced): reporting, the cached Debian root, the container,
# commands inside it, and reading README.md / COMPAT.md. Functions used from `bash -c` checks
# are exported.
# shellcheck shell=bash disable=SC2016

passed=0
failed=0
pended=0
FAILED_STEPS=()
ok() { echo "systemd: ok $*"; passed=$((passed + 1)); }
fail() { echo "systemd: FAIL $*"; failed=$((failed + 1)); FAILED_STEPS+=("$*"); }
pending() { echo "systemd: pending $*"; pended=$((pended + 1)); }
skip() { echo "systemd: skipped: $*"; exit 77; }
section() { echo "== $*"; }
# check DESCRIPTION COMMAND...: ok if the command succeeds.
check() {
    local what=$1
    shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else fail "$what"; fi
}
# A feature of another branch is missing: pending while it is listed in PENDING, else a failure.
feature_missing() {
    local name=$1
    shift
    if [[ " $PENDING " == *" $name "* ]]; then pending "$* [$name]"; else fail "$* [$name]"; fi
}

finish() {
    echo "systemd: $passed ok, $failed failed, $pended pending ($((SECONDS - ${STARTED:-0})) s)"
    if [ "$failed" -gt 0 ]; then
        printf 'systemd: failed: %s\n' "${FAILED_STEPS[@]}"
        exit 1
    fi
    [ "$passed" -gt 0 ] || exit 1
    exit 0
}

# Wait up to $1 seconds for the command that follows to succeed (journal lines, which are
# only seen by reading).
wait_for() {
    local limit=$1 end
    shift
    end=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $end ] || return 1
        sleep 0.1
    done
}

# ---- the Debian root ----------------------------------------------------------------------
SUITE=bookworm
PACKAGES=systemd,systemd-sysv,dbus,iproute2,procps,openssl,man-db,groff-base,ca-certificates,adduser,exim4-daemon-light
# The root as a tarball under SYSTEMD_TEST_CACHE, keyed by suite and package list; made by
# mmdebstrap when missing (about 20 s to a minute), unpacked into $1 for each run.
make_root() {
    local dest=$1 cache key tar
    cache=${SYSTEMD_TEST_CACHE:-/var/cache/greenarrow_proxy-tests}
    key=$(printf '%s %s' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-12)
    tar=$cache/$SUITE-$key.tar
    mkdir -p "$cache" "$dest"
    # A directory in the tarball's place is what an earlier version of this script left
    # (mmdebstrap chose the format from the name "$tar.part", whose extension it does not
    # know, and made a directory): make the tarball again.
    [ -d "$tar" ] && rm -rf "$tar"
    if [ ! -s "$tar" ]; then
        echo "systemd: making the Debian root (mmdebstrap $SUITE, cached in $tar)"
        rm -rf "$tar.part"
        if ! mmdebstrap --quiet --format=tar --variant=minbase --include="$PACKAGES" "$SUITE" "$tar.part" >"$WORK/mmdebstrap.log" 2>&1; then
            tail -n 5 "$WORK/mmdebstrap.log"
            rm -rf "$tar.part"
            skip "mmdebstrap could not make a $SUITE root (no Debian mirror reachable?)"
        fi
        mv "$tar.part" "$tar"
    fi
    tar -C "$dest" -xf "$tar" || skip "cannot unpack $tar"
    ROOTFS=$dest
    export ROOTFS
}

# A copy of the .deb $1 with a higher version (VERSION+systemdtest1) as $2, for the upgrade.
bump_version() {
    local from=$1 to=$2 dir=$3
    rm -rf "$dir"
    dpkg-deb -R "$from" "$dir" || { fail "dpkg-deb -R $from"; return 1; }
    sed -i 's/^Version: .*/&+systemdtest1/' "$dir/DEBIAN/control"
    dpkg-deb --root-owner-group -Znone -b "$dir" "$to" >/dev/null || fail "dpkg-deb -b (the next version)"
    rm -rf "$dir"
}

# ---- the container ------------------------------------------------------------------------
NSPAWN=""
C=""
boot_container() {
    local root=$1 _
    systemd-nspawn -q -D "$root" --boot --register=no --keep-unit --private-network \
        -M "gapsd$$" >"$WORK/console.log" 2>&1 &
    NSPAWN=$!
    for _ in $(seq 100); do
        C=$(ps -o pid=,comm= --ppid "$NSPAWN" 2>/dev/null | awk '$2 == "systemd" {print $1}')
        [ -n "$C" ] && break
        kill -0 "$NSPAWN" 2>/dev/null || break
        sleep 0.1
    done
    if [ -z "$C" ]; then
        tail -n 5 "$WORK/console.log"
        skip "systemd-nspawn --boot does not run here"
    fi
    export C
    # `systemctl` fails to reach systemd's bus for the first moments after boot.
    local state="" end=$((SECONDS + 60))
    while [ $SECONDS -lt $end ]; do
        state=$(timeout 30 nsenter -t "$C" -m -u -i -n -p -C -- systemctl is-system-running --wait 2>/dev/null)
        case "$state" in running | degraded | maintenance | stopping) break ;; esac
        sleep 0.2
    done
    case "$state" in
        running | degraded) ok "systemd booted in the container ($state)" ;;
        *) fail "systemd booted in the container (state: ${state:-none})"; finish ;;
    esac
}

# Run a command inside the container, as root, with a clean environment.
ct() {
    nsenter -t "$C" -m -u -i -n -p -C -- env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root LANG=C.UTF-8 TERM=dumb "$@"
}
# Run a command on the MTA host: in the container, in the network namespace MTA_NS.
mta() {
    if [ -n "$MTA_NS" ]; then ct ip netns exec "$MTA_NS" "$@"; else ct "$@"; fi
}
unit_prop() { ct systemctl show -P "$1" greenarrow_proxy.service; }
# KEY=VALUE lines, sorted, for a comma-separated list of properties.
unit_props() { ct systemctl show -p "$1" greenarrow_proxy.service | sort; }
journal_has() { ct journalctl -u greenarrow_proxy.service -o cat --no-pager | grep -e "$1" >/dev/null; }
unit_journal_has() { ct journalctl -u "$1" -o cat --no-pager | grep -e "$2" >/dev/null; }
journal_json() { ct journalctl -u greenarrow_proxy.service -o json --no-pager; }
# gaproxy send from the drained source must get 453 drained.
drained_refused() {
    local out
    if out=$(mta gaproxy send --proxy "$PROXY_IP" --proxy-name proxy.example.com --ca-file "$CA_FILE" \
        --secret-file /etc/greenarrow_proxy/secret --source 127.0.0.3 --mx 127.0.0.10 \
        --ehlo mta1.example.com --timeout 10s 2>&1); then
        return 1
    fi
    grep -q "453.*drained" <<<"$out"
}
export -f ct mta unit_prop unit_props journal_has unit_journal_has wait_for drained_refused

cleanup() {
    local rc=$?
    if [ -n "$C" ]; then
        if [ "$failed" -gt 0 ]; then
            echo "== the container's journal (on failure)"
            ct journalctl --no-pager -o short-precise -n 400 2>/dev/null | sed 's/^/  | /'
        fi
        ct systemctl poweroff >/dev/null 2>&1
    fi
    if [ -n "$NSPAWN" ]; then
        local _
        for _ in $(seq 100); do
            kill -0 "$NSPAWN" 2>/dev/null || break
            sleep 0.1
        done
        kill "$NSPAWN" 2>/dev/null
        wait "$NSPAWN" 2>/dev/null
    fi
    if [ "${SYSTEMD_TEST_KEEP:-0}" = 1 ]; then
        echo "systemd: kept $WORK"
    else
        rm -rf "$WORK"
    fi
    exit $rc
}

# ---- the documents ------------------------------------------------------------------------
# The documents' example addresses and what the container uses instead (the only edits the
# test makes to what the documents say): the proxy host's address, the MTA network, the
# egress addresses.
# The proxy's address (10.1.0.5) and the MTA network (10.1.0.0/24) are used as written: they
# are on a veth pair between the container and the MTA host's network namespace (mta_network);
# only where that cannot be made are they replaced by loopback ones (mta_network_fallback).
DOC_SUBST=(-e 's|203\.0\.113\.10|127.0.0.2|g' -e 's|203\.0\.113\.11|127.0.0.3|g')
PROXY_IP=10.1.0.5
MTA_IP=10.1.0.7
# The network namespace the MTA host's commands run in (empty: the container's own).
MTA_NS=mta
export PROXY_IP MTA_IP MTA_NS

doc_path() {
    case "$1" in
        README.md) echo "$REPO/README.md" ;;
        *) echo "$REPO/docs/$1" ;;
    esac
}
# The document's lines with shell continuations joined, trailing `# comments` dropped and runs
# of blanks squeezed.
doc_text() {
    sed -e ':a' -e '/\\$/{N;s/\\\n[[:space:]]*//;ba}' "$(doc_path "$1")" |
        sed -e 's/^[[:space:]]*//' -e 's/[[:space:]]\{1,\}#[[:space:]].*$//' -e 's/[[:space:]]\{2,\}/ /g'
}
# doc_has DOC 'COMMAND': the document shows this command (one line, or continued with \).
doc_has() {
    if doc_text "$1" | grep -xF -e "$2" >/dev/null; then return 0; fi
    fail "$1 no longer shows: $2"
    return 1
}
# doc_run DOC 'COMMAND' [SED-EXPRESSION]: the document shows the command; run it inside the
# container (as root: a leading sudo is dropped) with the example addresses replaced (and the
# extra substitution, if given). With ON_MTA=1 in the environment, on the MTA host (mta).
doc_run() {
    local doc=$1 cmd=$2 run out rc where=ct
    doc_has "$doc" "$cmd" || return 1
    run=$(sed "${DOC_SUBST[@]}" ${3:+-e "$3"} <<<"$cmd" | sed -e 's/^sudo //' -e 's/| sudo /| /g')
    [ "${ON_MTA:-0}" = 1 ] && where=mta
    out=$($where bash -c "$run" 2>&1)
    rc=$?
    if [ $rc = 0 ]; then ok "$doc: $run"; else fail "$doc: $run (exit $rc)"; fi
    [ -z "$out" ] || printf '%s\n' "$out" | head -n 40 | sed 's/^/  | /'
    return $rc
}
# doc_block DOC NAME: the fenced block that follows `<!-- tests/systemd: NAME -->` in DOC.
doc_block() {
    awk -v tag="<!-- tests/systemd: $2 -->" '
        index($0, tag) { found = 1; next }
        found == 1 && /^```/ { found = 2; next }
        found == 2 && /^```/ { exit }
        found == 2 { print }
    ' "$(doc_path "$1")"
}

# conf_apply DOC NAME "KEYS": merge the YAML block NAME of DOC (example addresses replaced)
# into the installed configuration, as an administrator editing it would: the top-level keys
# the block sets replace the file's own (and KEYS, which the document says to delete, go),
# the rest of the file stays as shipped. Mode and owner of the file are kept.
conf_apply() {
    local doc=$1 name=$2 drop=$3 block keys file=$ROOTFS/etc/greenarrow_proxy/greenarrow_proxy.yaml
    block=$(doc_block "$doc" "$name" | sed "${DOC_SUBST[@]}")
    if [ -z "$block" ]; then
        fail "$doc has the block <!-- tests/systemd: $name -->"
        return 1
    fi
    keys=$(sed -n 's/^\([a-z_]*\):.*/\1/p' <<<"$block" | tr '\n' ' ')
    awk -v keys=" $keys $drop " '
        /^[a-z_]+:/ { k = $0; sub(/:.*/, "", k); skipping = index(keys, " " k " ") > 0 }
        /^[^ ]/ && !/^[a-z_]+:/ { skipping = 0 }
        !skipping { print }
    ' "$file" >"$WORK/conf.new" && printf '\n%s\n' "$block" >>"$WORK/conf.new" &&
        cat "$WORK/conf.new" >"$file"
    ok "$doc block $name applied (keys: $keys${drop:+; removed: $drop})"
}

# ---- the MTA host ---------------------------------------------------------------------------
# The MTA host's network, inside the container: a network namespace `mta` joined to the
# container by a veth pair, the container's end (gap0) with the proxy's address 10.1.0.5/24 as
# README writes it, the MTA's end with 10.1.0.7/24 (in allow_from: 10.1.0.0/24); and a second
# namespace `other` (gap1: 10.2.0.5/24, its end 10.2.0.9/24, routed to 10.1.0.0/24 through the
# container) for a host outside allow_from. Nothing is routed out of the container (it has only
# its loopback and these pairs). Exim's service runs in `mta` (NetworkNamespacePath=), and the
# test submits to it there (`mta sendmail`), so every delivery of Exim's comes from 10.1.0.7.
# Fails if the container cannot make them.
mta_network() {
    ct bash -e -c '
        ip netns add mta
        ip link add gap0 type veth peer name eth0 netns mta
        ip addr add 10.1.0.5/24 dev gap0
        ip link set gap0 up
        ip -n mta link set lo up
        ip -n mta addr add 10.1.0.7/24 dev eth0
        ip -n mta link set eth0 up
        ip netns add other
        ip link add gap1 type veth peer name eth0 netns other
        ip addr add 10.2.0.5/24 dev gap1
        ip link set gap1 up
        ip -n other link set lo up
        ip -n other addr add 10.2.0.9/24 dev eth0
        ip -n other link set eth0 up
        ip -n other route add 10.1.0.0/24 via 10.2.0.5
    ' || return 1
    # Exim's daemon (and its queue runner's deliveries) on the MTA host too.
    mkdir -p "$ROOTFS/etc/systemd/system/exim4.service.d"
    printf '[Service]\nNetworkNamespacePath=/run/netns/mta\n' >"$ROOTFS/etc/systemd/system/exim4.service.d/mta-host.conf"
    ct systemctl daemon-reload
}
# Where the namespaces cannot be made: everything on the container's loopback, with the
# documents' addresses replaced by loopback ones (10.1.0.5 -> 127.0.0.1, the MTA network ->
# 127.0.0.0/8).
mta_network_fallback() {
    DOC_SUBST+=(-e 's|10\.1\.0\.5|127.0.0.1|g' -e 's|10\.1\.0\.0/24|127.0.0.0/8|g')
    PROXY_IP=127.0.0.1
    MTA_IP=127.0.0.1
    MTA_NS=""
}

# Exim as docs/COMPAT.md says, on Debian: the transport lines into Debian's remote_smtp,
# log_selector, update-exim4.conf. Routing to the test MX (example.net -> 127.0.0.10) is
# Debian's own hubbed_hosts, and Debian's "internet site" configuration type; neither is the
# proxy's business.
exim_configure() {
    local lines tmpl=$ROOTFS/etc/exim4/exim4.conf.template
    sed -i "s/^dc_eximconfig_configtype=.*/dc_eximconfig_configtype='internet'/" "$ROOTFS/etc/exim4/update-exim4.conf.conf"
    echo "example.net: 127.0.0.10" >"$ROOTFS/etc/exim4/hubbed_hosts"
    # The transport options of COMPAT.md's block: what follows `driver = smtp`, without comments.
    lines=$(doc_block COMPAT.md exim-transport | sed "${DOC_SUBST[@]}" |
        awk '/driver *= *smtp/ { on = 1; next } on && !/^[[:space:]]*(#|$)/ { print }')
    if [ -z "$lines" ]; then
        fail "COMPAT.md has the block <!-- tests/systemd: exim-transport --> with options after driver = smtp"
        return 1
    fi
    printf '%s\n' "$lines" >"$WORK/exim-lines"
    awk -v f="$WORK/exim-lines" '
        { print }
        /^remote_smtp:/ { t = 1 }
        t && /^[[:space:]]*driver = smtp/ { while ((getline l < f) > 0) print l; t = 0 }
    ' "$tmpl" >"$WORK/exim.tmpl" && cat "$WORK/exim.tmpl" >"$tmpl"
    check "COMPAT.md's socks_proxy line is in Debian's remote_smtp transport" grep -q "^ *socks_proxy" "$tmpl"
    doc_run COMPAT.md "echo 'MAIN_LOG_SELECTOR = +proxy' | sudo tee -a /etc/exim4/exim4.conf.localmacros"
    doc_run COMPAT.md 'sudo update-exim4.conf'
}
