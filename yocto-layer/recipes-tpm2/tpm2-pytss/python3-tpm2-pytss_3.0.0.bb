SUMMARY = "Python bindings for the TPM2 software stack (tpm2-tss)"
DESCRIPTION = "ESAPI, marshalling, TCTI and policy bindings over tpm2-tss, used by tpm2d for \
the attestation key, quotes, sealing and the device key. The 3.0 series (newer than meta-tpm's \
2.3) brings the TSS private key and policy helpers tpm2d is written against."
HOMEPAGE = "https://github.com/tpm2-software/tpm2-pytss"
SECTION = "devel/python"
LICENSE = "BSD-2-Clause"
LIC_FILES_CHKSUM = "file://LICENSE;md5=500b2e742befc3da00684d8a1d5fd9da"

DEPENDS = " \
    python3-cffi-native \
    python3-pkgconfig-native \
    python3-pycparser-native \
    python3-setuptools-scm-native \
    tpm2-tss \
"

SRC_URI[sha256sum] = "c193cf1908b482f93c4aa464132920fe3a37d4b9d802e267974ff2dfe37d4433"

PYPI_PACKAGE = "tpm2_pytss"
UPSTREAM_CHECK_PYPI_PACKAGE = "tpm2-pytss"

inherit pkgconfig pypi python_setuptools_build_meta

# setup.py runs $CC as the C preprocessor for pycparser, as one program name; the build's CC
# carries flags (sysroot, machine), so it gets a wrapper that is a single path.
do_compile:prepend() {
    printf '#!/bin/sh\nexec %s "$@"\n' "${CC}" > ${WORKDIR}/tpm2-pytss-cc
    chmod 0755 ${WORKDIR}/tpm2-pytss-cc
    export CC="${WORKDIR}/tpm2-pytss-cc"
}

RDEPENDS:${PN} = "libtss2 python3-cffi python3-cryptography (>= 47.0.0) python3-packaging"
