SUMMARY = "PC/SC smartcard access for Python"
DESCRIPTION = "A SWIG binding of the PC/SC API (pcsc-lite), used by scd to talk to USB smartcard \
tokens (SmartCard-HSM) through pcscd. Neither meta-oe nor meta-python ships it."
HOMEPAGE = "https://pyscard.sourceforge.io/"
SECTION = "devel/python"
LICENSE = "LGPL-2.1-or-later"
LIC_FILES_CHKSUM = "file://LICENSE;md5=b5eb9e5de362e4213d99d477ed4a7c1d"

DEPENDS = "pcsc-lite swig-native"

SRC_URI[sha256sum] = "a24356f57a0a950740b6e54f51f819edd5296ee8892a6625b0da04724e9e6c13"

inherit pkgconfig pypi python_setuptools_build_meta

RDEPENDS:${PN} = "pcsc-lite-lib"
