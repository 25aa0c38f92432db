# %postun of greenarrow-proxy (plain shell; $1 = 0 on removal, 1 on upgrade).
# The system user is kept on removal (RPM convention: its files may remain).
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null 2>&1 || :
    if [ "$1" -ge 1 ]; then
        # Upgrade: restart with the new binary, only if it was running.
        systemctl try-restart greenarrow_proxy.service >/dev/null 2>&1 || :
    fi
fi
exit 0
