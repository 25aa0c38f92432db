#!/usr/bin/env bash
# The administrator's path under a real systemd (issue 20): the Debian package installed into
# a Debian 12 root booted with systemd as PID 1 in a container, and used exactly as README.md
# ("Running the daemon"), docs/COMPAT.md (Exim) and the man pages say.
#
# The root comes from mmdebstrap (Debian packages only; cached as a tarball, unpacked afresh for
# each run) and boots with `systemd-nspawn --boot --register=no --keep-unit --private-network`:
# the container has only its own loopback, so the proxy, a test MX (`gaproxy testmx` on
# 127.0.0.10:25) and Exim (Debian's exim4-daemon-light, as Debian configures it) all run inside
# it. The MTA host is a network namespace the test makes inside the container (`mta`, 10.1.0.7,
# joined by a veth pair to the container's 10.1.0.5, README's proxy address; lib.sh,
# mta_network): Exim's service, its deliveries and the native test message run there, so they
# reach the proxy from another address, through README's `listen` and `allow_from` as written;
# a second namespace (`other`, 10.2.0.9) is an MTA host outside allow_from. Commands run there through nsenter into the container's systemd (machinectl cannot reach
# a container started without registering; --keep-unit because there may be no systemd on the
# host). The helpers are in tests/systemd/lib.sh, the journal's JSON is read by fields.py.
#
# The commands and configuration fragments the test uses are taken from the documents: each
# command is looked up verbatim in README.md or COMPAT.md before it runs (with the documents'
# egress addresses 203.0.113.10 and .11 replaced by 127.0.0.2 and .3, nothing else), and the YAML and Exim fragments
# are the documents' own blocks (marked `<!-- tests/systemd: NAME -->`). A document that stops
# saying what the test does fails the test.
#
# Steps: dpkg -i; an unconfigured start (exit 78, no restart, the key named in the journal);
# the certificate, the secrets and the configuration as README says; check as the service user;
# systemctl start; a message through the native protocol; one from Exim through the SOCKS5
# front-end (each from the MTA host, named in the proxy's session line); the per-session audit
# line; SIGUSR1 and the report's journal fields; an MTA host outside allow_from refused; systemctl
# reload with a broken and a good file; gaproxy status and a drain; a package upgrade (the drain
# still in force, the configuration untouched); man pages with groff's warnings on; systemctl
# stop; purge. One line per check: `systemd: ok …`, `systemd: FAIL …` or `systemd: pending …`
# (a feature of another branch not here yet, see PENDING below), then a summary line. On a
# failure the container's journal is printed.
#
#   tests/systemd/run.sh               build the .deb (packaging/build.sh), then test
#   tests/systemd/run.sh --deb FILE    test an existing .deb (CI: the one tests/packaging.sh built)
#
# Exit: 0 pass, 1 fail, 77 skipped (not root, no systemd-nspawn/mmdebstrap and no way to
# install them, no Debian mirror, or a container that cannot boot here).
# Environment: SYSTEMD_TEST_CACHE (where the root tarball is kept; default
# /var/cache/greenarrow_proxy-tests), SYSTEMD_TEST_KEEP=1 (keep the work directory),
# SYSTEMD_TEST_PENDING (see below).
# shellcheck disable=SC2016 # single-quoted programs for bash -c, on purpose
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1
REPO=$PWD

# Features other branches are adding. A feature named here that is not in the package makes
# its checks print `systemd: pending …`; once it is merged, remove it from this list so that
# its absence fails the test.
#   cert   gaproxy cert (the certificate directory README describes)
#   state  drains kept in the state directory (StateDirectory=), surviving restarts and upgrades
#   audit  the per-session audit line at info level, with journal fields
PENDING=${SYSTEMD_TEST_PENDING-}

# shellcheck source=tests/systemd/lib.sh
. "$REPO/tests/systemd/lib.sh"

deb=""
case "${1:-}" in
    --deb) deb=$(realpath "${2:?--deb needs a file}") ;;
    "") ;;
    *) echo "usage: $0 [--deb FILE]" >&2; exit 2 ;;
esac

# ---- preconditions ------------------------------------------------------------------------
[ "$(id -u)" = 0 ] || skip "needs root (systemd-nspawn, dpkg inside the container)"
missing=()
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
command -v nsenter >/dev/null || missing+=(util-linux)
command -v python3 >/dev/null || missing+=(python3)
command -v dpkg-deb >/dev/null || missing+=(dpkg)
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || skip "${missing[*]} not installed and there is no apt-get"
    echo "systemd: installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq "${missing[@]}" >/dev/null ||
        skip "cannot install ${missing[*]}"
fi

if [ -z "$deb" ]; then
    echo "systemd: building the .deb (packaging/build.sh)"
    out=$(bash packaging/build.sh 2>&1) || { printf '%s\n' "$out" | tail -n 20; echo "systemd: FAIL packaging/build.sh"; exit 1; }
    deb=$(printf '%s\n' "$out" | sed -n 's/^deb: //p' | tail -n 1)
fi
[ -f "$deb" ] || { echo "systemd: FAIL no .deb: $deb"; exit 1; }

# ---- the container ------------------------------------------------------------------------
STARTED=$SECONDS
WORK=$(mktemp -d /var/tmp/gaproxy-systemd.XXXXXX)
trap cleanup EXIT
make_root "$WORK/root"
# The package, and the same package with a higher version for the upgrade.
cp "$deb" "$WORK/root/root/greenarrow-proxy.deb"
bump_version "$deb" "$WORK/root/root/greenarrow-proxy-next.deb" "$WORK/repack"
boot_container "$WORK/root"

# ---- the MTA host -------------------------------------------------------------------------
section "the MTA host's network"
if mta_network >"$WORK/netns.log" 2>&1; then
    ok "network namespace mta (10.1.0.7/24) joined to the container's 10.1.0.5/24 by a veth pair; namespace other (10.2.0.9) outside allow_from"
else
    sed 's/^/  | /' "$WORK/netns.log"
    echo "systemd: note the container cannot make a network namespace and a veth pair (see above): the MTA runs on the container's loopback, 10.1.0.5 and 10.1.0.0/24 become 127.0.0.1 and 127.0.0.0/8, and the refusal of an address outside allow_from is not checked"
    mta_network_fallback
fi

# ---- the package --------------------------------------------------------------------------
section "install"
doc_has README.md 'sudo dpkg -i greenarrow-proxy_*.deb'
out=$(ct dpkg -i /root/greenarrow-proxy.deb 2>&1)
rc=$?
check "dpkg -i (exit $rc)" test $rc = 0
check "postinst says the service is enabled but not started" grep -q "enabled but NOT started" <<<"$out"
check "unit enabled" ct systemctl is-enabled --quiet greenarrow_proxy.service
check "unit not started by the package" bash -c '! "$@"' _ ct systemctl is-active --quiet greenarrow_proxy.service
VERSION1=$(ct dpkg-query -W -f='${Version}' greenarrow-proxy)

section "an unconfigured start"
ct systemctl start greenarrow_proxy.service >/dev/null 2>&1
rc=$?
check "systemctl start fails on the shipped configuration (exit $rc)" test $rc != 0
# SubState=failed, not auto-restart: systemd is not going to start it again.
props=$(unit_props ExecMainStatus,SubState,NRestarts,Result)
check "exit status 78, failed, no restart scheduled, none made ($(tr '\n' ' ' <<<"$props"))" \
    test "$props" = $'ExecMainStatus=78\nNRestarts=0\nResult=exit-code\nSubState=failed'
check "the journal names auth_shared_secret and the file to edit" \
    bash -c 'j=$("$@" journalctl -u greenarrow_proxy.service -o cat); grep -q "auth_shared_secret" <<<"$j" && grep -q "/etc/greenarrow_proxy/greenarrow_proxy.yaml" <<<"$j"' _ ct

# ---- the configuration, as README says ----------------------------------------------------
section "certificate"
if ct gaproxy cert --help >/dev/null 2>&1; then
    doc_run README.md 'sudo gaproxy cert --dir /etc/greenarrow_proxy/tls --host proxy.example.com --ip 10.1.0.5'
    check "gaproxy cert made the directory 0750 root:greenarrow_proxy" \
        test "$(ct stat -c '%a %U %G' /etc/greenarrow_proxy/tls)" = "750 root greenarrow_proxy"
    check "... the server key 0640 root:greenarrow_proxy" \
        test "$(ct stat -c '%a %U %G' /etc/greenarrow_proxy/tls/key.pem)" = "640 root greenarrow_proxy"
    check "... the CA key 0600 root" \
        test "$(ct stat -c '%a %U' /etc/greenarrow_proxy/tls/ca.key)" = "600 root"
    check "... the server certificate is not a CA and names proxy.example.com and $PROXY_IP" \
        bash -c 'ip=$1; shift; t=$("$@" openssl x509 -in /etc/greenarrow_proxy/tls/cert.pem -noout -text); grep -q "CA:FALSE" <<<"$t" && grep -q "DNS:proxy.example.com" <<<"$t" && grep -q "IP Address:$ip" <<<"$t"' _ "$PROXY_IP" ct
    CA_FILE=/etc/greenarrow_proxy/tls/ca.pem
else
    feature_missing cert "gaproxy cert: using greenarrow_proxy(8)'s openssl example instead"
    # greenarrow_proxy(8), EXAMPLES, with proxy.example.com kept and the proxy's address.
    ct bash -c 'install -d -m 750 -g greenarrow_proxy /etc/greenarrow_proxy/tls &&
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
            -subj /CN=proxy.example.com -addext subjectAltName=DNS:proxy.example.com,IP:'"$PROXY_IP"' \
            -addext basicConstraints=critical,CA:FALSE -addext extendedKeyUsage=serverAuth \
            -keyout /etc/greenarrow_proxy/tls/key.pem -out /etc/greenarrow_proxy/tls/cert.pem 2>/dev/null &&
        chgrp greenarrow_proxy /etc/greenarrow_proxy/tls/key.pem && chmod 640 /etc/greenarrow_proxy/tls/key.pem'
    check "the man page's openssl example made a certificate and key" ct test -s /etc/greenarrow_proxy/tls/key.pem
    CA_FILE=/etc/greenarrow_proxy/tls/cert.pem
fi

section "secrets"
doc_run README.md 'openssl rand -hex 32 | sudo install -m 640 -g greenarrow_proxy /dev/stdin /etc/greenarrow_proxy/secret'
check "the secret: 0640 root:greenarrow_proxy, 64 hex digits" \
    bash -c '[ "$("$@" stat -c "%a %U %G" /etc/greenarrow_proxy/secret)" = "640 root greenarrow_proxy" ] && "$@" grep -Eqx "[0-9a-f]{64}" /etc/greenarrow_proxy/secret' _ ct
doc_run COMPAT.md 'openssl rand -hex 32 | sudo install -m 640 -g greenarrow_proxy /dev/stdin /etc/greenarrow_proxy/mta1.secret'

section "configuration"
CONF=/etc/greenarrow_proxy/greenarrow_proxy.yaml
# README: the keys to change, then (COMPAT.md) the Exim host's client and the SOCKS5 front-end,
# then README's line for trying it with a test MX on this host. Each block replaces the keys it
# sets; README says to delete auth_shared_secret when the secret is in a file.
conf_apply README.md config "auth_shared_secret"
conf_apply COMPAT.md exim-proxy ""
conf_apply README.md test-mx ""
check "auth_shared_secret is gone, auth_shared_secret_file set" \
    bash -c '! grep -q "^auth_shared_secret:" "$1" && grep -q "^auth_shared_secret_file:" "$1"' _ "$ROOTFS$CONF"
check "the configuration is still 0640 root:greenarrow_proxy" \
    test "$(ct stat -c '%a %U %G' "$CONF")" = "640 root greenarrow_proxy"
doc_has README.md 'sudo runuser -u greenarrow_proxy -- greenarrow_proxy --check-config'
out=$(ct runuser -u greenarrow_proxy -- greenarrow_proxy --check-config 2>&1 >/dev/null)
rc=$?
check "--check-config as the service user (exit $rc)" test $rc = 0
[ $rc = 0 ] || printf '  | %s\n' "$out"
if grep -qi warn <<<"$out"; then printf '  | %s\n' "$out"; fi

section "start"
doc_run README.md 'sudo systemctl start greenarrow_proxy'
check "active" ct systemctl is-active --quiet greenarrow_proxy.service
check "the journal says ready" wait_for 5 journal_has "ready on $PROXY_IP:807"
check "the journal lists the SOCKS5 front-end's listener" journal_has "listening on $PROXY_IP:1080"
PID1=$(unit_prop MainPID)
check "MainPID is set ($PID1)" test "${PID1:-0}" != 0

section "a message through the native protocol"
doc_has README.md 'sudo gaproxy testmx --listen 127.0.0.10:25'
ct systemd-run --quiet --unit=testmx --collect gaproxy testmx --listen 127.0.0.10:25
check "the test MX is listening" wait_for 5 unit_journal_has testmx "listening on 127.0.0.10:25"
ON_MTA=1 doc_run README.md 'sudo gaproxy send --proxy 10.1.0.5 --proxy-name proxy.example.com --ca-file /etc/greenarrow_proxy/tls/ca.pem --secret-file /etc/greenarrow_proxy/secret --source 203.0.113.10 --mx 127.0.0.10 --ehlo mta1.example.com --from a@example.com --to b@example.net' \
    "s|/etc/greenarrow_proxy/tls/ca.pem|$CA_FILE|"
check "the test MX got it from 127.0.0.2 over TLS" wait_for 5 unit_journal_has testmx "message from 127.0.0.2:[0-9]* (tls: true): MAIL FROM:<a@example.com>"
check "the proxy's session line names the MTA host (mta=$MTA_IP)" \
    wait_for 5 journal_has "^session ended.* mta=$MTA_IP:[0-9]* .*source=127.0.0.2 "

section "Exim through the SOCKS5 front-end"
check "exim -bV lists SOCKS (COMPAT.md: a build with SOCKS support)" \
    bash -c '"$@" exim -bV | grep "^Support for:" | grep -w SOCKS >/dev/null' _ ct
doc_run COMPAT.md 'sudo install -m 640 -g Debian-exim mta1.secret /etc/exim4/greenarrow_proxy.secret' \
    's|install -m 640 -g Debian-exim mta1.secret|install -m 640 -g Debian-exim /etc/greenarrow_proxy/mta1.secret|'
exim_configure
doc_run COMPAT.md 'sudo systemctl restart exim4'
printf 'From: a@example.org\nTo: c@example.net\nSubject: through the SOCKS5 front-end\n\nHello.\n' |
    mta sendmail -f a@example.org c@example.net
check "the test MX got Exim's message from 127.0.0.2 (the source in name=)" \
    wait_for 15 unit_journal_has testmx "message from 127.0.0.2:[0-9]* (tls: true): MAIL FROM:<a@example.org> RCPT TO:\[\"c@example.net\"\]"
check "Exim logged the delivery with the proxy (log_selector +proxy: PRX=)" \
    wait_for 5 ct grep -q "=> c@example.net .*PRX=\[$PROXY_IP\]" /var/log/exim4/mainlog
ct grep "=> c@example.net" /var/log/exim4/mainlog | sed 's/^/  | /'
check "the proxy's session line names Exim's host (mta=$MTA_IP, client mta1)" \
    wait_for 5 journal_has "session ended.* mta=$MTA_IP:[0-9]* client=mta1 .*source=127.0.0.2 "
ct journalctl -u greenarrow_proxy.service -o cat --no-pager | grep "session ended.* client=mta1 " | sed 's/^/  | /'
# The dedicated client: mta1's secret cannot use a source address of another client (127.0.0.3
# is the default client's). What Exim makes of the refusal is printed, not checked: the SOCKS
# reply codes for refusals are being decided (docs/COMPAT.md, "Refusals and Exim's retry data").
sed -i 's/name=127\.0\.0\.2 /name=127.0.0.3 /' "$ROOTFS/etc/exim4/exim4.conf.template"
ct update-exim4.conf
printf 'From: a@example.org\nTo: d@example.net\nSubject: from a source mta1 may not use\n\nHello.\n' |
    mta sendmail -f a@example.org d@example.net
check "mta1's secret with another client's source (127.0.0.3): refused by the proxy" \
    wait_for 10 journal_has "127.0.0.3 is not permitted"
check "... nothing reached the test MX from 127.0.0.3" bash -c '! unit_journal_has testmx "message from 127.0.0.3:"'
echo "  | Exim: $(ct grep "d@example.net" /var/log/exim4/mainlog | tail -n 1 | cut -d' ' -f3-)"
sed -i 's/name=127\.0\.0\.3 /name=127.0.0.2 /' "$ROOTFS/etc/exim4/exim4.conf.template"
ct update-exim4.conf

section "the audit line"
if journal_json | python3 "$REPO/tests/systemd/fields.py" audit 127.0.0.2 >"$WORK/audit.txt"; then
    sed 's/^/  | /' "$WORK/audit.txt"
    check "one info-level line for each session from 127.0.0.2 (native and SOCKS5)" \
        test "$(grep -c '^MESSAGE=' "$WORK/audit.txt")" = 2
    for f in MTA CLIENT SOURCE MX; do
        check "... with the journal field $f" test "$(grep -c "^$f=" "$WORK/audit.txt")" = 2
    done
    check "... Exim's session as client mta1" grep -qx "CLIENT=mta1" "$WORK/audit.txt"
else
    feature_missing audit "no per-session audit line at info level (journal fields SOURCE and MX) for the sessions from 127.0.0.2"
fi

section "SIGUSR1 and the journal"
doc_run README.md 'sudo systemctl kill -s SIGUSR1 greenarrow_proxy'
if wait_for 5 journal_has "report summary"; then
    ok "the report is in journalctl -u greenarrow_proxy"
    journal_json | python3 "$REPO/tests/systemd/fields.py" report >"$WORK/report.txt"
    sed 's/^/  | /' "$WORK/report.txt"
    # Three sessions: the native one and Exim's (connected), Exim's refused one.
    check "the summary counts the sessions (sessions_total=3 connects=2 connect_failures=1 frontend_sessions=2 failures=source_not_permitted:550:1)" \
        bash -c 'for w in sessions_total=3 connects=2 connect_failures=1 frontend_sessions=2 failures=source_not_permitted:550:1; do grep -Eq "^MESSAGE=report summary .*\<$w( |$)" "$1" || exit 1; done' _ "$WORK/report.txt"
    check "journal fields: SYSLOG_IDENTIFIER=greenarrow_proxy, PRIORITY=6" \
        bash -c 'grep -q "^SYSLOG_IDENTIFIER=greenarrow_proxy$" "$1" && grep -q "^PRIORITY=6$" "$1"' _ "$WORK/report.txt"
else
    fail "the report is in journalctl -u greenarrow_proxy"
fi

section "an MTA host outside allow_from"
if [ -n "$MTA_NS" ]; then
    # From the namespace `other` (10.2.0.9, routed to 10.1.0.5 through the container).
    out=$(ct ip netns exec other gaproxy send --proxy "$PROXY_IP" --proxy-name proxy.example.com \
        --ca-file "$CA_FILE" --secret-file /etc/greenarrow_proxy/secret --source 127.0.0.2 \
        --mx 127.0.0.10 --ehlo mta1.example.com --from a@example.com --to e@example.net --timeout 10s 2>&1)
    rc=$?
    check "gaproxy send from 10.2.0.9 fails (exit $rc)" test $rc != 0
    check "... the proxy refused it: \"refused: not in allow_from mta=10.2.0.9:…\"" \
        wait_for 5 journal_has "refused: not in allow_from mta=10\.2\.0\.9:[0-9]"
    ct journalctl -u greenarrow_proxy.service -o cat --no-pager | grep "not in allow_from" | sed 's/^/  | /'
    # The SOCKS5 front-end: closed without a reply to the greeting (not left waiting).
    check "... the SOCKS5 front-end closes a connection from 10.2.0.9 without a reply" \
        ct ip netns exec other bash -c 'exec 3<>/dev/tcp/10.1.0.5/1080 || exit 2
            printf "\x05\x01\x02" >&3 2>/dev/null
            timeout 5 cat <&3 >/tmp/socks-reply 2>/dev/null
            [ $? != 124 ] && [ ! -s /tmp/socks-reply ]'
    check "... nothing reached the test MX for e@example.net" bash -c '! unit_journal_has testmx "e@example.net"'
else
    echo "systemd: note no network namespace: the refusal of an MTA outside allow_from is not checked"
fi

section "systemctl reload"
ct cp -p "$CONF" /root/good.yaml
printf 'bogus_key: 1\n' >>"$ROOTFS$CONF"
ct systemctl reload greenarrow_proxy >/dev/null 2>&1
rc=$?
check "a broken file: systemctl reload fails (exit $rc)" test $rc != 0
check "... the daemon keeps running (same MainPID)" test "$(unit_prop MainPID)" = "$PID1"
check "... systemctl status says the reload failed" bash -c 'unit_prop StatusText | grep bogus_key >/dev/null'
check "... the journal names the key" journal_has "bogus_key"
ct cp -p /root/good.yaml "$CONF"
doc_run README.md 'sudo systemctl reload greenarrow_proxy'
check "the good file: reloaded, the status text cleared" \
    bash -c 'wait_for 5 journal_has "configuration reloaded" && [ -z "$(unit_prop StatusText)" ]'
check "... same MainPID" test "$(unit_prop MainPID)" = "$PID1"

section "gaproxy status and a drain"
doc_run README.md 'sudo gaproxy drain --source 203.0.113.11'
doc_has README.md 'sudo gaproxy status'
status=$(ct gaproxy status 2>&1)
printf '%s\n' "$status" | grep -i -A3 'drain' | sed 's/^/  | /'
check "gaproxy status shows the drain" grep -Eq '^ +source 127\.0\.0\.3$' <<<"$status"
check "gaproxy status shows the counters" grep -q "sessions_total" <<<"$status"
check "a message from the drained source is refused (453 drained)" drained_refused

section "package upgrade"
ct sha256sum "$CONF" /etc/greenarrow_proxy/secret /etc/greenarrow_proxy/mta1.secret >"$WORK/before.sum"
out=$(ct dpkg -i /root/greenarrow-proxy-next.deb 2>&1 </dev/null)
rc=$?
check "dpkg -i of the next version (exit $rc, no conffile question)" test $rc = 0
[ $rc = 0 ] || printf '  | %s\n' "$out"
VERSION2=$(ct dpkg-query -W -f='${Version}' greenarrow-proxy)
check "upgraded: $VERSION1 -> $VERSION2" test "$VERSION2" != "$VERSION1"
check "the daemon was restarted and runs" \
    bash -c 'ct systemctl is-active --quiet greenarrow_proxy && [ "$(unit_prop MainPID)" != "$1" ]' _ "$PID1"
check "the configuration and the secrets are untouched" \
    bash -c 'diff "$1" <(ct sha256sum "$2" /etc/greenarrow_proxy/secret /etc/greenarrow_proxy/mta1.secret)' _ "$WORK/before.sum" "$CONF"
check "... and still 0640 root:greenarrow_proxy" test "$(ct stat -c '%a %U %G' "$CONF")" = "640 root greenarrow_proxy"
if ct gaproxy status 2>&1 | grep -E '^ +source 127\.0\.0\.3$' >/dev/null; then
    ok "the drain survived the upgrade (gaproxy status)"
    check "... a message from the drained source is still refused" drained_refused
else
    feature_missing state "the drain did not survive the upgrade (drains in the state directory)"
fi

section "man pages"
for page in greenarrow_proxy gaproxy greenarrow_proxy.yaml; do
    warn=$(ct env MANWIDTH=80 man --warnings "$page" 2>&1 >/dev/null)
    check "man --warnings $page: no warnings" test -z "$warn"
    [ -z "$warn" ] || printf '  | %s\n' "$warn" | head -n 10
done
check "man greenarrow_proxy renders SERVICE UNIT" bash -c '"$@" env MANWIDTH=80 man greenarrow_proxy 2>/dev/null | grep "^SERVICE UNIT" >/dev/null' _ ct

section "stop"
ct systemctl stop greenarrow_proxy
check "inactive, exit status 0" \
    bash -c '! ct systemctl is-active --quiet greenarrow_proxy && [ "$(unit_prop ExecMainStatus)" = 0 ]'

section "purge"
ct systemctl stop testmx >/dev/null 2>&1
out=$(ct dpkg --purge greenarrow-proxy 2>&1)
rc=$?
check "dpkg --purge (exit $rc)" test $rc = 0
check "the unit is gone" bash -c '! ct test -e /lib/systemd/system/greenarrow_proxy.service'
check "the configuration is gone" bash -c '! ct test -e "$1"' _ "$CONF"
left=$(ct find /etc/greenarrow_proxy 2>/dev/null | sort | tr '\n' ' ')
echo "  | left in /etc/greenarrow_proxy: ${left:-nothing}"
check "only the operator's files are left (certificates, secrets)" \
    bash -c '! grep -q "greenarrow_proxy.yaml" <<<"$1"' _ "$left"
if ! ct test -e /var/lib/greenarrow_proxy; then
    ok "nothing left in /var/lib/greenarrow_proxy"
else
    feature_missing state "purge left /var/lib/greenarrow_proxy"
fi

finish
