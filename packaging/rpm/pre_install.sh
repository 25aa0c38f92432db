# %pre of greenarrow-proxy (plain shell; $1 = 1 on install, 2 on upgrade).
# The system user and group the daemon runs as; the package's files need the group.
getent group greenarrow_proxy >/dev/null || groupadd --system greenarrow_proxy
getent passwd greenarrow_proxy >/dev/null || \
    useradd --system --gid greenarrow_proxy --no-create-home --home-dir /nonexistent \
        --shell /sbin/nologin --comment "greenarrow_proxy daemon" greenarrow_proxy
exit 0
