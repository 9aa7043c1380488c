#!/usr/bin/env bash
# Checks the operating-system programs that `make test`, `make bench` and `make quickstart` need, and installs the
# missing ones with apt-get when run as root on Debian or Ubuntu. Anywhere else it stops with one message that
# lists the command to run. Go and make are needed before this script can run at all.
#
#   hack/prereqs.sh          check, install what is missing (root + apt-get), or explain
#   hack/prereqs.sh --check  check only; exit 1 and explain when something is missing
set -euo pipefail

check_only=false
[ "${1:-}" = "--check" ] && check_only=true

# program → Debian package that provides it. sshd and sudo run the real SSH hosts of the tests (sudo also creates
# /etc/sudoers.d); ssh is the OpenSSH client the P2 benchmark compares against; unshare, nsenter and mount put each
# test host in its own mount namespace; flock, setsid and tail are what CAPR's bootstrap runs on a host; git and
# ca-certificates let the Go toolchain fetch modules; openssl checks a CA hash in the end-to-end kubeadm stand-in.
# runc, the one node part built with cgo (`make node-tools`), needs a C compiler, pkg-config and libseccomp's header.
# iptables: `make node-images` copies its tools, libraries and xtables modules into kube-proxy's image.
# socat, ebtables, conntrack and ethtool: the node tools kubeadm's preflight may look for on the real node hosts.
declare -A package_of=(
	[/usr/sbin/sshd]=openssh-server
	[ssh]=openssh-client
	[ssh-keygen]=openssh-client
	[sudo]=sudo
	[/etc/sudoers.d]=sudo
	[unshare]=util-linux
	[nsenter]=util-linux
	[flock]=util-linux
	[setsid]=util-linux
	[mount]=mount
	[tail]=coreutils
	[git]=git
	[shellcheck]=shellcheck
	[/etc/ssl/certs/ca-certificates.crt]=ca-certificates
	[openssl]=openssl
	[gcc]=gcc
	[pkg-config]=pkg-config
	[/usr/include/seccomp.h]=libseccomp-dev
	[/usr/sbin/iptables]=iptables
	[socat]=socat
	[/usr/sbin/ebtables]=ebtables
	[conntrack]=conntrack
	[/usr/sbin/ethtool]=ethtool
)

missing_packages() {
	local thing found pkgs=()
	for thing in "${!package_of[@]}"; do
		case "$thing" in
		/*) [ -e "$thing" ] && found=true || found=false ;;
		*) command -v "$thing" >/dev/null 2>&1 && found=true || found=false ;;
		esac
		$found || pkgs+=("${package_of[$thing]}")
	done
	[ ${#pkgs[@]} -eq 0 ] || printf '%s\n' "${pkgs[@]}" | sort -u | tr '\n' ' '
}

missing=$(missing_packages)
if [ -z "$missing" ]; then
	exit 0
fi

if ! $check_only && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "Installing the missing OS packages: $missing"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	# shellcheck disable=SC2086 # one word per package
	apt-get install -y -qq --no-install-recommends $missing >/dev/null
	missing=$(missing_packages)
	[ -z "$missing" ] && exit 0
	echo "apt-get ran, but these packages are still missing: $missing" >&2
	exit 1
fi

{
	echo "Missing OS packages: $missing"
	echo "The SSH tests and the quickstart run real OpenSSH hosts, and make node-tools builds runc; they need them. Install them with:"
	echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends $missing"
	echo "(as root on Debian or Ubuntu, 'make test' and 'make quickstart' install them themselves)."
} >&2
exit 1
