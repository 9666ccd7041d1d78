SUMMARY = "Cryptographic recipes and primitives for Python"
DESCRIPTION = "pyca/cryptography, newer than the 46 series of openembedded-core: tpm2-pytss 3.0 \
(tpm2d) reads and writes TSS private keys with the ASN.1 codec that cryptography has since 47. \
The daemons use it for X.509, CSRs, signatures and key wrapping."
HOMEPAGE = "https://cryptography.io/"
SECTION = "devel/python"
LICENSE = "Apache-2.0 | BSD-3-Clause"
LIC_FILES_CHKSUM = "file://LICENSE;md5=8c3617db4fb6fae01f1d253ab91511e4 \
                    file://LICENSE.APACHE;md5=4e168cce331e5c827d4c2b68a6200e1b \
                    file://LICENSE.BSD;md5=5ae30ba4123bc4f2fa49aa0b0dce887b"

DEPENDS = "openssl python3-cffi-native"

SRC_URI[sha256sum] = "9f8e55fe4e63613a5e1cc5819030f27b97742d720203a087802ce4ce9ceb52bb"

require ${BPN}-crates.inc

inherit pypi python_maturin cargo-update-recipe-crates pkgconfig

# No legacy OpenSSL provider on a device.
export CRYPTOGRAPHY_BUILD_OPENSSL_NO_LEGACY = "1"

RDEPENDS:${PN} = "python3-cffi python3-numbers python3-threading"

CVE_PRODUCT = "cryptography.io:cryptography pyca:cryptography"
