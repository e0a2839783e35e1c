#!/bin/sh
# natganker-agent postremove (deb: postrm with $1 = remove, purge, upgrade, ...; rpm: %postun
# with $1 = 0 on erase, 1 on upgrade). A purge also deletes the agent's state; files the
# operator added to /etc/natganker (the gossip key) are left where they are.
set -e
case "$1" in
purge)
	rm -rf /var/lib/natganker
	;;
esac
case "$1" in
remove | purge | 0)
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		systemctl daemon-reload || true
	fi
	;;
esac
exit 0
