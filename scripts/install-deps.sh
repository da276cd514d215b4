#!/usr/bin/env bash
# install-deps.sh: installs what headroom's lab, browser, Prometheus, etcd and R tests need on
# Debian 12. Idempotent: when everything is present it returns in well under a second.
#
# The guest kernel is not installed on the machine: its Debian package is downloaded
# and unpacked into $HEADROOM_CACHE/kernel, where internal/lab finds it.
set -euo pipefail

CACHE="${HEADROOM_CACHE:-/var/cache/headroom}"
KDIR="$CACHE/kernel"

PKGS=(
	qemu-system-x86
	libvirt-daemon
	libvirt-daemon-driver-qemu
	libvirt-clients
	iproute2
	util-linux
	cpio
	gzip
	chromium
	fonts-liberation
	# metrics and data-source tests: a real Prometheus (and promtool), the libvirt exporter
	prometheus
	prometheus-libvirt-exporter
	# HA tests: a real etcd
	etcd-server
	# the backtest's peer: R's forecast package
	r-base-core
	r-cran-forecast
)

log() { echo "install-deps: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
	log "must run as root"
	exit 1
fi

missing=()
for p in "${PKGS[@]}"; do
	st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	[ "$st" = "install ok installed" ] || missing+=("$p")
done

# The guest loads these modules (listed in load order) for its virtio NIC, disk and
# balloon; internal/lab puts them in the initramfs.
GUEST_MODULES="virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci failover net_failover virtio_net virtio_blk virtio_balloon"
kernel_ok() { [ -s "$KDIR/vmlinuz" ] && [ -s "$KDIR/modules/order" ]; }
users_ok() {
	getent group kvm >/dev/null && getent group libvirt-qemu >/dev/null && getent passwd libvirt-qemu >/dev/null
}

if [ ${#missing[@]} -eq 0 ] && kernel_ok && users_ok; then
	log "all present (kernel $(cat "$KDIR/version" 2>/dev/null || echo '?'))"
	exit 0
fi

export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ] || ! kernel_ok; then
	log "apt-get update"
	apt-get update -qq
fi

if [ ${#missing[@]} -gt 0 ]; then
	log "installing: ${missing[*]}"
	# --no-install-recommends: qemu and libvirt recommend a desktop's worth of extras
	# (spice, dnsmasq, the systemd units of libvirt-daemon-system) that the lab never uses.
	apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
fi

# libvirt-daemon-system (not installed: it brings systemd units) would create these.
# libvirtd resolves its built-in default qemu user and group (both libvirt-qemu) before
# it reads qemu.conf, so they must exist even though the lab runs QEMU as root.
getent group kvm >/dev/null || groupadd --system kvm
getent group libvirt-qemu >/dev/null || groupadd --system libvirt-qemu
getent passwd libvirt-qemu >/dev/null ||
	useradd --system --no-create-home --home-dir /var/lib/libvirt --shell /usr/sbin/nologin \
		-g libvirt-qemu -G kvm libvirt-qemu

if ! kernel_ok; then
	# linux-image-amd64 is the metapackage; its dependency names the current ABI
	# (e.g. linux-image-6.1.0-56-amd64), which stays downloadable from the mirror.
	kpkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
	if [ -z "$kpkg" ]; then
		log "cannot resolve the kernel package behind linux-image-amd64"
		exit 1
	fi
	log "downloading guest kernel $kpkg"
	tmp=$(mktemp -d)
	# apt downloads as its sandbox user _apt, which must be able to write here.
	chown _apt "$tmp" 2>/dev/null || chmod 777 "$tmp"
	(cd "$tmp" && apt-get download -qq "$kpkg" >/dev/null)
	mkdir -p "$KDIR"
	rm -rf "$KDIR/root"
	dpkg -x "$tmp"/"$kpkg"_*.deb "$KDIR/root"
	vmlinuz=$(ls "$KDIR"/root/boot/vmlinuz-* | head -n1)
	cp "$vmlinuz" "$KDIR/vmlinuz.tmp"
	mv "$KDIR/vmlinuz.tmp" "$KDIR/vmlinuz"
	basename "$vmlinuz" | sed 's/^vmlinuz-//' >"$KDIR/version"
	# Only the kernel image and the guest's few modules are kept.
	rm -rf "$KDIR/modules" && mkdir -p "$KDIR/modules"
	for m in $GUEST_MODULES; do
		cp "$(find "$KDIR"/root/lib/modules -name "$m.ko" | head -n1)" "$KDIR/modules/"
	done
	echo "$GUEST_MODULES" | tr ' ' '\n' >"$KDIR/modules/order"
	rm -rf "$KDIR/root" "$tmp"
fi

log "done (kernel $(cat "$KDIR/version"))"
