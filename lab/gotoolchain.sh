#!/bin/sh
# Makes sure a Go toolchain at least as new as go.mod's `go` line is on PATH. A bare Debian
# machine has none (and Debian 12's golang-go is too old to fetch a newer one by itself), so
# the pinned toolchain is fetched from the Go module proxy (the same zip `GOTOOLCHAIN=auto`
# would fetch), unpacked under $GOROOT_PARENT (default /usr/local/lib) and linked into
# $LINK_DIR (default /usr/local/bin). Does nothing when a new enough go is already there.
set -eu

want=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$(dirname "$0")/../go.mod")
[ -n "$want" ] || { echo "gotoolchain: no go line in go.mod" >&2; exit 1; }
parent=${GOROOT_PARENT:-/usr/local/lib}
link=${LINK_DIR:-/usr/local/bin}
proxy=${GOPROXY_URL:-https://proxy.golang.org}

# newer_or_equal A B: version A >= B (dotted numbers).
newer_or_equal() {
	[ "$(printf '%s\n%s\n' "$1" "$2" | sort -V | head -n1)" = "$2" ]
}

if command -v go >/dev/null 2>&1; then
	have=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
	if [ -n "$have" ] && newer_or_equal "$have" "$want"; then
		exit 0
	fi
	echo "gotoolchain: go $have is older than go.mod's $want; fetching $want" >&2
fi

case $(uname -m) in
x86_64) arch=amd64 ;;
aarch64 | arm64) arch=arm64 ;;
*) echo "gotoolchain: no Go toolchain for $(uname -m); install Go $want from https://go.dev/dl" >&2; exit 1 ;;
esac
if ! command -v curl >/dev/null 2>&1 || ! command -v unzip >/dev/null 2>&1; then
	[ "$(id -u)" = 0 ] || { echo "gotoolchain: need curl and unzip (or Go $want); run as root to install them" >&2; exit 1; }
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q curl unzip ca-certificates >/dev/null
fi

mod="golang.org/toolchain@v0.0.1-go$want.linux-$arch"
dest="$parent/go$want"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "gotoolchain: fetching Go $want ($arch) from $proxy" >&2
curl -sSfL -o "$tmp/go.zip" "$proxy/golang.org/toolchain/@v/v0.0.1-go$want.linux-$arch.zip"
unzip -q "$tmp/go.zip" -d "$tmp/x"
rm -rf "$dest"
mkdir -p "$parent" "$link"
mv "$tmp/x/$mod" "$dest"
chmod +x "$dest/bin/"* "$dest/pkg/tool/"*/* 2>/dev/null || true
ln -sf "$dest/bin/go" "$link/go"
ln -sf "$dest/bin/gofmt" "$link/gofmt"
"$link/go" version >&2
