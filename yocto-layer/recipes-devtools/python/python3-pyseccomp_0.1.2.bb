SUMMARY = "libseccomp for Python, through ctypes"
DESCRIPTION = "A pure-Python binding of libseccomp, API compatible with libseccomp's own binding, \
used by cmld to build the containers' seccomp filters. It finds libseccomp through the dynamic \
linker's cache (ctypes.util.find_library), so the image needs ldconfig."
HOMEPAGE = "https://github.com/cptpcrd/pyseccomp"
SECTION = "devel/python"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://PKG-INFO;beginline=8;endline=8;md5=8227180126797a0148f94f483f3e1489"

SRC_URI[sha256sum] = "0d54efacf71bda4bdfd21233f5444b730cbecf593d602f796e6412a8682258bd"

inherit pypi python_setuptools_build_meta

RDEPENDS:${PN} = "ldconfig libseccomp python3-ctypes"
