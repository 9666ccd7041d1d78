SUMMARY = "CML: container management layer daemons and clients"
DESCRIPTION = "The trust|me / GyroidOS container management layer in Python: cmld runs every \
workload in an isolated, signed, measured container; scd holds tokens and keys and verifies \
signatures; tpm2d talks to the TPM and answers remote attestation; control and cml-control \
are the clients, wire-compatible with GyroidOS."
SECTION = "admin"

require cml-source.inc

inherit python_setuptools_build_meta systemd

PACKAGE_BEFORE_PN = "cmld scd tpm2d cml-control cml-tpm2-control cml-rattestation cml-sign"

SYSTEMD_PACKAGES = "cmld scd tpm2d"
SYSTEMD_SERVICE:cmld = "cmld.service cml-sysdata.service"
SYSTEMD_SERVICE:scd = "cml-scd.service"
SYSTEMD_SERVICE:tpm2d = "cml-tpm2d.service"

do_install:append() {
    install -d ${D}${systemd_system_unitdir}
    install -m 0644 ${S}/systemd/cmld.service ${S}/systemd/cml-scd.service \
        ${S}/systemd/cml-tpm2d.service ${S}/systemd/cml-sysdata.service ${D}${systemd_system_unitdir}/

    # The original's client paths, for scripts written for GyroidOS.
    install -d ${D}${sbindir}
    mv ${D}${bindir}/control ${D}${sbindir}/control
    mv ${D}${bindir}/tpm2_control ${D}${sbindir}/tpm2_control
}

# One package per program (each with its unit, added by the systemd class); ${PN} keeps the
# rest of site-packages: cml_common, which every program needs, and the dist-info.
FILES:cmld += "${PYTHON_SITEPACKAGES_DIR}/cmld ${bindir}/cmld ${bindir}/cml-sysdata"
FILES:scd += "${PYTHON_SITEPACKAGES_DIR}/scd ${bindir}/scd"
FILES:tpm2d += "${PYTHON_SITEPACKAGES_DIR}/tpm2d ${bindir}/tpm2d"
FILES:cml-control += "${PYTHON_SITEPACKAGES_DIR}/cml_control ${bindir}/cml-control ${sbindir}/control"
FILES:cml-tpm2-control += "${PYTHON_SITEPACKAGES_DIR}/cml_tpm2_control ${bindir}/cml-tpm2-control ${sbindir}/tpm2_control"
FILES:cml-rattestation += "${PYTHON_SITEPACKAGES_DIR}/cml_rattestation ${bindir}/cml-rattestation"
FILES:cml-sign += "${PYTHON_SITEPACKAGES_DIR}/cml_sign ${bindir}/cml-sign"

# Python dependencies carry the lower bound of pyproject.toml; the unit test compares them.
RDEPENDS:${PN} = " \
    python3-cryptography (>= 41) \
    python3-modules \
    python3-protobuf (>= 7.35) \
    python3-systemd (>= 235) \
"
# cmld: pyseccomp finds libseccomp through ldconfig's cache; mkfs.ext4 makes container volumes;
# dmsetup, cryptsetup (veritysetup too) and losetup make the encrypted volumes, verity images and
# the system data volume (cml-sysdata); pyroute2 and libnftables make the containers' network and
# firewall; cservice is placed in every container; scd is required by its unit.
RDEPENDS:cmld = " \
    ${PN} \
    cml-cservice \
    cryptsetup \
    e2fsprogs-mke2fs \
    ldconfig \
    libdevmapper \
    libseccomp \
    nftables \
    python3-cryptography (>= 41) \
    python3-pyroute2 (>= 0.9.7) \
    python3-pyseccomp (>= 0.1.2) \
    scd \
    util-linux-losetup \
"
# scd: PKCS#11 modules are loaded by path (scd --pkcs11-module); USB tokens need pcscd and ccid.
RDEPENDS:scd = " \
    ${PN} \
    python3-cryptography (>= 41) \
    python3-pkcs11 (>= 0.10.1) \
    python3-pyscard (>= 2.3.1) \
"
# tpm2d: the tss group of its unit comes from tpm2-tss; dmsetup maps the TPM-sealed disk key.
RDEPENDS:tpm2d = " \
    ${PN} \
    libdevmapper \
    libtss2 \
    libtss2-tcti-device \
    python3-cryptography (>= 41) \
    python3-grpcio (>= 1.60) \
    python3-tpm2-pytss (>= 3.0.0) \
    tpm2-tss \
"
RDEPENDS:cml-control = "${PN}"
RDEPENDS:cml-tpm2-control = "${PN} python3-cryptography (>= 41) tpm2d"
RDEPENDS:cml-rattestation = "${PN} cml-sign python3-cryptography (>= 41) python3-grpcio (>= 1.60) scd"
# cml-sign builds signed GuestOSes: mksquashfs, veritysetup, tar.
RDEPENDS:cml-sign = " \
    ${PN} \
    cryptsetup \
    python3-cryptography (>= 41) \
    python3-pkcs11 (>= 0.10.1) \
    scd \
    squashfs-tools \
    tar \
"

RRECOMMENDS:cmld = "tpm2d"
RRECOMMENDS:scd = "ccid pcsc-lite"
