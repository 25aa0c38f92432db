# %post of greenarrow-proxy (plain shell; $1 = 1 on install, 2 on upgrade).
if [ "$1" -eq 1 ]; then
    # The configuration holds the shared secret: root:greenarrow_proxy 640, directory 750
    # (the package's file attributes say so too; this also covers the directory).
    chown root:greenarrow_proxy /etc/greenarrow_proxy /etc/greenarrow_proxy/greenarrow_proxy.yaml 2>/dev/null || :
    chmod 750 /etc/greenarrow_proxy 2>/dev/null || :
    chmod 640 /etc/greenarrow_proxy/greenarrow_proxy.yaml 2>/dev/null || :
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
    # Enable, but never start: the example configuration has a placeholder secret.
    systemctl enable greenarrow_proxy.service >/dev/null 2>&1 || :
    cat <<'NOTE'

greenarrow_proxy: the service is enabled but NOT started.
Before starting it:
  1. set a secret of your own in /etc/greenarrow_proxy/greenarrow_proxy.yaml
     (auth_shared_secret; make one with: openssl rand -hex 32),
  2. install the TLS certificate and key it names (tls_certificate, tls_private_key;
     the key readable by group greenarrow_proxy),
  3. list this host's source addresses in source_addresses,
  4. check:  greenarrow_proxy --check-config
  5. start:  systemctl start greenarrow_proxy.service
Until then the daemon refuses to start (exit status 78, the reason in the journal).
See greenarrow_proxy(8) and greenarrow_proxy.yaml(5).

NOTE
fi
exit 0
