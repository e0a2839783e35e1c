#!/bin/sh
# natganker-agent postinstall (deb: postinst configure; rpm: %post with $1 = 1 or 2).
# Makes systemd see the unit. It neither enables nor starts the service: the configuration
# and the gossip key must be put in place first. An upgrade does not restart a running agent
# (a restart hands its groups to a peer and back): restart it when it suits you.
set -e
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
	systemctl daemon-reload || true
	if systemctl is-active --quiet natganker-agent.service; then
		echo "natganker-agent: restart the service to run the new version: systemctl restart natganker-agent"
	fi
fi
exit 0
