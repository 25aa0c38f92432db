# %preun of greenarrow-proxy (plain shell; $1 = 0 on removal, 1 on upgrade).
if [ "$1" -eq 0 ]; then
    systemctl disable --now greenarrow_proxy.service >/dev/null 2>&1 || :
fi
exit 0
