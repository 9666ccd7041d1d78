SUMMARY = "Protocol Buffers runtime for Python (upb backend)"
DESCRIPTION = "The protobuf runtime the CML daemons need: their generated message code (protoc 35) \
requires a runtime of the 7.x series, newer than meta-python's. Built with the bundled upb C \
backend, so it does not depend on the C++ libprotobuf of the build."
HOMEPAGE = "https://protobuf.dev/"
SECTION = "devel/python"
LICENSE = "BSD-3-Clause & MIT"
# MIT: the bundled utf8_range (its licence text is not in the sdist; the header names it).
LIC_FILES_CHKSUM = "file://LICENSE;md5=37b5762e07f0af8c74ce80a8bda4266b"

SRC_URI[sha256sum] = "497d0463ff3316681da6c0b9e8d06cb465d61abce00b613ab42226175644d1bb"

inherit pypi setuptools3

RDEPENDS:${PN} = "python3-ctypes python3-datetime python3-json python3-logging python3-numbers"

CVE_PRODUCT = "google:protobuf protobuf:protobuf google-protobuf protobuf-python"
