# The kernel options of the CML (files/cml.cfg) for the Yocto reference kernel, in builds whose
# distro carries the "cml" override (DISTRO = "cml" does). A BSP kernel that inherits
# kernel-yocto takes the same fragment: see README.md, "Kernel".
FILESEXTRAPATHS:prepend:cml := "${THISDIR}/files:"

SRC_URI:append:cml = " file://cml.cfg"
