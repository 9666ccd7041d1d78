SUMMARY = "CML in-container service (cservice), a static binary"
DESCRIPTION = "The small helper that cmld places read-only at /sbin/cservice in every container: \
GyroidOS GuestOSes use it as init. It reports the boot to cmld, sets the hostname and DNS server, \
and ends the container on shutdown. Static, so it runs in any GuestOS whatever its libc."
SECTION = "admin"

require recipes-cml/cml/cml-source.inc

# Static like scripts/build-service.sh, but non-PIE by default: glibc here is built without
# --enable-static-pie unless GLIBCPIE says so (then set CSERVICE_LINK = "-static-pie").
CSERVICE_LINK ?= "-static"
CSERVICE_WARNINGS = "-Wall -Wextra -Wshadow -Wformat=2 -std=gnu11"

do_compile() {
    ${CC} ${CFLAGS} ${CSERVICE_WARNINGS} ${LDFLAGS} ${CSERVICE_LINK} -o ${B}/cservice ${S}/service/cservice.c
}

do_install() {
    install -d ${D}${libexecdir}/cml
    install -m 0755 ${B}/cservice ${D}${libexecdir}/cml/cservice
}
