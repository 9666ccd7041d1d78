SUMMARY = "PKCS#11 (Cryptoki) for Python"
DESCRIPTION = "A Pythonic binding of PKCS#11, used by scd for PKCS#11 tokens (HSMs, smartcards, \
SoftHSM) and by cml-sign for keys held in a token. The 0.10 series (newer than meta-python's 0.7) \
is the API the suite is written against."
HOMEPAGE = "https://github.com/pyauth/python-pkcs11"
SECTION = "devel/python"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSE;md5=f68bda54505b4002e6ec86e08125ef79"

SRC_URI[sha256sum] = "e0d7ccede3b3145a678d7c8c59b3c64dcebeb77c9146ad3394a4b1309c4ab2a2"

PYPI_PACKAGE = "python_pkcs11"
UPSTREAM_CHECK_PYPI_PACKAGE = "python-pkcs11"

inherit pypi python_setuptools_build_meta cython

DEPENDS += "python3-setuptools-scm-native"

RDEPENDS:${PN} = "python3-asn1crypto"
