#!/bin/busybox sh
# Stage 1 (initrd): load the virtio/ext4 (and 9p) modules of Debian's kernel, mount the root disk,
# copy a scenario's overlay from the host share into it, and hand over to systemd. Any failure
# powers off at once with the reason on the console, so the host never waits for a timeout.
/bin/busybox mkdir -p /bin /proc /sys /dev /newroot /share
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

fail() {
    echo "CML-STAGE1-FAILED: $*" > /dev/console
    sleep 1
    echo o > /proc/sysrq-trigger
    sleep 30
}

while read -r mod; do
    # Optional accelerations (crc32c-intel without SSE4.2 under TCG) may fail; the mount below
    # is the real test that every needed module loaded.
    insmod "/lib/modules/$mod" 2>/dev/null || echo "stage1: $mod not loaded (continuing)" > /dev/console
done < /modules.list

n=0
while [ ! -b /dev/vda ]; do
    n=$((n + 1))
    [ $n -gt 100 ] && fail "no /dev/vda after 10 s"
    sleep 0.1
done
mount -t ext4 -o rw /dev/vda /newroot || fail "mount /dev/vda"

if grep -q 'cml.share=1' /proc/cmdline; then
    mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000 host0 /share || fail "mount the 9p share"
    if [ -d /share/overlay ]; then
        cp -a /share/overlay/. /newroot/ || fail "copy the scenario overlay"
        echo "stage1: applied the scenario overlay" > /dev/console
    fi
    umount /share
fi

umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /sbin/init
