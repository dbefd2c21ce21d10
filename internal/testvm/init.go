package testvm

// initScript is the guest's /init (PID 1): it mounts the pseudo file
// systems, loads the modules in dependency order, names the virtio
// serial ports under /dev/virtio-ports (no udev here), starts the guest
// agent if its port exists, and then serves the command shell on the
// port org.blockwise.shell.
//
// Shell protocol, one command at a time: the host writes "ID BASE64\n"
// (the script, base64 on one line); the guest runs it with sh, stdout
// and stderr together, stdin /dev/null, and answers "B ID\n", the output
// base64 (several lines), then "E ID STATUS\n". A virtio port opens once
// only (EBUSY), so the loop opens it read-write on fd 3; when the host
// side is not connected reads return EOF and the loop reopens it.
const initScript = `#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/sbin:/usr/sbin:/bin:/usr/bin
mkdir -p /proc /sys /dev /tmp /run /var/run /mnt /var/log
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/virtio-ports
while read -r m; do insmod "$m" || echo "testvm: insmod $m failed" > /dev/ttyS0; done < /modules.list
n=0
while [ ! -e /sys/class/virtio-ports/*/name ] && [ $n -lt 100 ]; do sleep 0.05; n=$((n+1)); done
sleep 0.1
for p in /sys/class/virtio-ports/*; do
  [ -e "$p/name" ] && ln -sf "/dev/${p##*/}" "/dev/virtio-ports/$(cat $p/name)"
done
if [ -e /dev/virtio-ports/org.qemu.guest_agent.0 ] && [ -x /usr/sbin/qemu-ga ]; then
  /usr/sbin/qemu-ga -d -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 -l /var/log/qga.log -f /run/qga.pid -t /run
fi
echo "testvm: ready" > /dev/ttyS0
P=/dev/virtio-ports/org.blockwise.shell
while true; do
  while read -r id b64 <&3; do
    echo "$b64" | base64 -d > /tmp/.cmd
    sh /tmp/.cmd > /tmp/.out 2>&1 < /dev/null
    rc=$?
    { echo "B $id"; base64 /tmp/.out; echo "E $id $rc"; } >&3
  done 3<>$P
  sleep 0.1
done
`
