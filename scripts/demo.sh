#!/usr/bin/env bash
# The main job: installs what is needed, builds the demo busybox GuestOS, starts tpm2d, scd and
# cmld on a demo base directory (hosted mode), creates and starts the demo container, runs a
# command in it and lists it. tpm2d uses /dev/tpmrm0 when the machine has one, otherwise a demo
# swtpm (state in demo/swtpm, TCP on 127.0.0.1:${DEMO_SWTPM_PORT:-2321} and the next port);
# tpm2d's attestation port listens on 127.0.0.1:9505 only.
#   bash scripts/demo.sh        start (or restart) the demo
#   bash scripts/demo.sh stop   stop the demo daemons
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
demo="$top/demo"
bin="$top/.venv/bin"

stop_demo() {
    for d in cmld scd tpm2d swtpm; do
        pidf="$demo/$d.pid"
        if [ -f "$pidf" ]; then
            pid=$(cat "$pidf")
            if kill -0 "$pid" 2>/dev/null; then
                kill "$pid"
                for _ in $(seq 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            fi
            rm -f "$pidf"
        fi
    done
}

if [ "${1:-}" = "stop" ]; then
    stop_demo
    echo "demo daemons stopped"
    exit 0
fi

bash scripts/setup.sh
stop_demo
rm -rf "$demo/base"
mkdir -p "$demo/base/operatingsystems" "$demo/logs"
cp examples/device.conf "$demo/base/device.conf"
"$bin/python" scripts/build-guestos.py "$demo/base/operatingsystems" >/dev/null

common=(--base-dir "$demo/base" --log-dir "$demo/logs")
if [ -c /dev/tpmrm0 ]; then
    tcti="device:/dev/tpmrm0"
else
    port="${DEMO_SWTPM_PORT:-2321}"
    mkdir -p "$demo/swtpm"
    swtpm socket --tpm2 --tpmstate "dir=$demo/swtpm" --server "type=tcp,port=$port,bindaddr=127.0.0.1" \
        --ctrl "type=tcp,port=$((port + 1)),bindaddr=127.0.0.1" --flags not-need-init,startup-clear \
        --pid "file=$demo/swtpm.pid" --daemon
    tcti="swtpm:host=127.0.0.1,port=$port"
fi
"$bin/tpm2d" "${common[@]}" --pid-file "$demo/tpm2d.pid" --tcti "$tcti" --attest-listen 127.0.0.1:9505 \
    --ml-state "$demo/run/tpm2d-ml.json"
"$bin/scd" "${common[@]}" --pid-file "$demo/scd.pid"
"$bin/cmld" "${common[@]}" --pid-file "$demo/cmld.pid" --run-dir "$demo/run" --stop-timeout 10

echo "\$ cml-control create examples/demo-container.conf"
"$bin/cml-control" create examples/demo-container.conf
echo
echo "\$ cml-control start demo"
"$bin/cml-control" start demo
for _ in $(seq 100); do
    "$bin/cml-control" state demo | grep -q 'state: RUNNING' && break
    sleep 0.05
done
echo
echo "\$ cml-control run demo nopty sh -c 'hostname; cat /proc/1/comm; ls /sys/class/net'"
"$bin/cml-control" run demo nopty sh -c 'hostname; cat /proc/1/comm; ls /sys/class/net'
echo
echo "\$ cml-control list"
"$bin/cml-control" list
echo
echo "Daemons are running (logs in $demo/logs). Try: $bin/cml-control list -s"
echo "Stop them with: bash scripts/demo.sh stop"
