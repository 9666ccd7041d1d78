#!/usr/bin/env bash
# Installs everything the suite needs on a Debian 12 machine (root): Debian packages and a venv
# built from Debian's own /usr/bin/python3 with the project installed in editable mode.
# Idempotent and quick when nothing changed.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"

APT_PACKAGES=(
    python3 python3-venv python3-dev gcc pkg-config libsystemd-dev   # venv + systemd-python build
    systemd                                                          # systemd-analyze verify
    ca-certificates git
    libc6-dev                                                        # static build of the in-container service (cservice)
    musl-tools                                                       # tests: a musl GuestOS for cservice (musl-gcc)
    busybox-static e2fsprogs                                         # demo GuestOS image (mkfs.ext4 -d)
    libseccomp2 util-linux iproute2 procps                           # runtime: seccomp binding, tests (nsenter, ip, ps)
    runc                                                             # bench reference: runc run of the same rootfs
    openssl softhsm2                                                 # scd: signature cross-checks, PKCS#11 token tests
    pcscd vsmartcard-vpcd swig libpcsclite-dev                       # scd: USB token over PC/SC (pyscard build + vpcd)
    squashfs-tools cryptsetup-bin                                    # cml-sign guestos: mksquashfs, veritysetup
    qemu-system-x86 qemu-utils ovmf swtpm swtpm-tools tpm2-tools     # VM tier: QEMU, OVMF, swtpm (measured boot); tpm2d tests
    libtss2-dev                                                      # tpm2d: tpm2-pytss (PyPI sdist) builds against it
    libnftables1                                                     # cmld: the partition firewall (nftables JSON API)
    mmdebstrap cpio kmod                                             # VM tier: guest rootfs, stage-1 initrd, depmod
    fdisk                                                            # tests: a GPT ESP for the A/B update (sfdisk)
    systemd-boot-efi mtools dosfstools binutils                      # VM tier: the A/B boot disk (UKI: stub + objcopy; FAT via mtools)
    rsyslog rsyslog-gnutls                                           # audit: the real collector for forwarding tests
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

venv="$top/.venv"
stamp="$venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv from /usr/bin/python3"
    /usr/bin/python3 -m venv "$venv"
fi
if [ ! -e "$stamp" ]; then
    echo "setup: installing the project and its dev tools into $venv"
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q -e ".[dev]"
    rm -f "$venv"/.installed-*
    touch "$stamp"
fi

# The in-container service, where this venv's cmld finds it (<sys.prefix>/libexec/cml/cservice).
svc=$(bash "$top/scripts/build-service.sh")
if ! cmp -s "$svc" "$venv/libexec/cml/cservice"; then
    install -D -m 0755 "$svc" "$venv/libexec/cml/cservice"
fi
