SUMMARY = "Example image: a device running the CML suite under systemd"
DESCRIPTION = "A minimal systemd image with tpm2d, scd and cmld enabled, the control clients \
(control at /usr/sbin/control, as on GyroidOS) and the in-container service at \
/usr/libexec/cml/cservice. A starting point for an integrator's own image."
LICENSE = "MIT"

inherit core-image features_check

IMAGE_INSTALL:append = " packagegroup-cml"

# GuestOS images and container volumes live under /var/lib/cml; leave room for a first one.
IMAGE_ROOTFS_EXTRA_SPACE = "524288"

REQUIRED_DISTRO_FEATURES = "systemd seccomp"
