#!/bin/sh
# natganker-agent preremove (deb: prerm with $1 = remove, upgrade, ...; rpm: %preun with
# $1 = 0 on erase, 1 on upgrade). On removal the service is stopped, which hands this
# instance's groups to a peer, and disabled. An upgrade leaves it running.
set -e
case "$1" in
remove | 0)
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		systemctl stop natganker-agent.service || true
		systemctl disable natganker-agent.service >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
