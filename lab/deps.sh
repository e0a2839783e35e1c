#!/bin/sh
# Installs what the failover lab needs on a Debian machine, as root. Idempotent and quiet
# unless something fails: apt packages only when a command is missing, moto and the AWS
# CLI from PyPI only when missing, the EC2 metadata mock with `go install` only when
# missing.
set -eu

log=$(mktemp)
trap 'rm -f "$log"' EXIT

fail() {
	echo "deps: $1 failed:" >&2
	cat "$log" >&2
	exit 1
}

need_root() {
	if [ "$(id -u)" != 0 ]; then
		echo "deps: run as root (the lab creates network namespaces)" >&2
		exit 1
	fi
}

# command -> Debian package
missing=""
for pair in ip:iproute2 nft:nftables keepalived:keepalived ping:iputils-ping ss:iproute2 python3:python3 pip3:python3-pip; do
	cmd=${pair%%:*}
	pkg=${pair#*:}
	if ! command -v "$cmd" >/dev/null 2>&1; then
		case " $missing " in *" $pkg "*) ;; *) missing="$missing $pkg" ;; esac
	fi
done
if [ -n "$missing" ]; then
	need_root
	export DEBIAN_FRONTEND=noninteractive
	apt-get update >"$log" 2>&1 || fail "apt-get update"
	# shellcheck disable=SC2086
	apt-get install -y --no-install-recommends $missing >"$log" 2>&1 || fail "apt-get install$missing"
fi

pip_missing=""
command -v moto_server >/dev/null 2>&1 || pip_missing="$pip_missing moto[server]"
command -v aws >/dev/null 2>&1 || pip_missing="$pip_missing awscli"
if [ -n "$pip_missing" ]; then
	# Debian marks its Python as externally managed; the lab's tools go in system-wide.
	# shellcheck disable=SC2086
	pip3 install --quiet $pip_missing >"$log" 2>&1 ||
		pip3 install --quiet --break-system-packages $pip_missing >"$log" 2>&1 ||
		fail "pip install$pip_missing"
fi

if ! command -v ec2-metadata-mock >/dev/null 2>&1; then
	command -v go >/dev/null 2>&1 || { echo "deps: go is needed to install ec2-metadata-mock" >&2; exit 1; }
	GOBIN=/usr/local/bin go install github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock@v1.13.0 >"$log" 2>&1 ||
		fail "go install ec2-metadata-mock"
fi
