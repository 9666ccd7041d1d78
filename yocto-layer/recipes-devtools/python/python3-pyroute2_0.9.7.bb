SUMMARY = "Linux netlink (rtnetlink) for Python"
DESCRIPTION = "A pure-Python netlink library, used by cmld to make the containers' veths, \
addresses, routes and network namespaces over rtnetlink (no ip tool). meta-python's recipe is \
older than the version cmld is tested with."
HOMEPAGE = "https://github.com/svinota/pyroute2"
SECTION = "devel/python"
LICENSE = "GPL-2.0-or-later | Apache-2.0"
LIC_FILES_CHKSUM = "file://LICENSE.GPL-2.0-or-later;md5=b234ee4d69f5fce4486a80fdaf4a4263 \
                    file://LICENSE.Apache-2.0;md5=34281e312165f843a2b7d1f114fe65ce"

SRC_URI[sha256sum] = "a678b098478c46ec51d6bf9a03c3cd2ac0172dffa590e9e8c1eeab633d0c17c6"

inherit pypi python_setuptools_build_meta

RDEPENDS:${PN} = "python3-ctypes python3-json python3-logging python3-multiprocessing python3-netclient"
