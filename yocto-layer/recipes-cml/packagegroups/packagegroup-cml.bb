SUMMARY = "The CML suite and the tools it runs on a device"
DESCRIPTION = "packagegroup-cml: the daemons (tpm2d, scd, cmld with their systemd units), the \
control clients and the in-container service, with the device tools they use. \
packagegroup-cml-tools adds what a development or test image wants besides: the operator tool \
cml-sign, the attestation verifier, tpm2-tools and a software PKCS#11 token (SoftHSM)."

inherit packagegroup

PACKAGES = "${PN} ${PN}-tools"

# cryptsetup: dm-crypt/dm-integrity volumes; nftables: c0 as router between containers;
# pcsc-lite and ccid: USB smartcard tokens for scd.
RDEPENDS:${PN} = " \
    ccid \
    cml-control \
    cml-cservice \
    cml-tpm2-control \
    cmld \
    cryptsetup \
    libdevmapper \
    nftables \
    pcsc-lite \
    scd \
    tpm2d \
"
RDEPENDS:${PN}-tools = " \
    cml-rattestation \
    cml-sign \
    softhsm \
    tpm2-tools \
"
