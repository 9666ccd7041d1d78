"""A real rsyslogd as the test's collector: TLS (gtls) syslog on a loopback port with a test CA,
writing each received message verbatim to a file. Started and stopped by PID."""

from __future__ import annotations

import datetime
import ipaddress
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

RSYSLOGD = Path("/usr/sbin/rsyslogd")
SEQ = re.compile(r'\[cml@32473 seq="(\d+)"')


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_tls(out: Path, server_name: str = "collector.test") -> tuple[Path, Path, Path]:
    """(ca.pem, server.pem, server.key) of a fresh test CA."""
    out.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(_name("test audit CA")).issuer_name(_name("test audit CA"))
          .public_key(ca_key.public_key()).serial_number(1).not_valid_before(now - datetime.timedelta(minutes=5))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(_name(server_name)).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(2).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(server_name),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = out / "ca.pem", out / "server.pem", out / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    paths[2].chmod(0o600)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def listening(pid: int, port: int) -> bool:
    """Whether the network namespace of `pid` has a TCP socket listening on `port`."""
    try:
        rows = Path(f"/proc/{pid}/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return False
    return any(r.split()[1].endswith(f":{port:04X}") and r.split()[3] == "0A" for r in rows)


class Collector:
    """rsyslogd in the given network namespace (cmld's, in the tests: loopback of its own)."""

    def __init__(self, work: Path, tls: tuple[Path, Path, Path], port: int, netns: str) -> None:
        self.netns = netns
        self.work = work
        self.port = port
        self.out = work / "received.log"
        self.conf = work / "rsyslog.conf"
        self.pidfile = work / "rsyslogd.pid"
        self.proc: subprocess.Popen[bytes] | None = None
        ca, cert, key = tls
        (work / "spool").mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"""
global(workDirectory="{work / 'spool'}" defaultNetstreamDriver="gtls"
       defaultNetstreamDriverCAFile="{ca}" defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
input(type="imtcp" port="{port}" address="127.0.0.1")
template(name="raw" type="string" string="%rawmsg%\\n")
action(type="omfile" file="{self.out}" template="raw")
""")

    def start(self) -> None:
        log = (self.work / "rsyslogd.stderr").open("ab")
        # `ip netns exec` enters the namespace and execs rsyslogd: the PID is rsyslogd's.
        self.proc = subprocess.Popen(["ip", "netns", "exec", self.netns, str(RSYSLOGD), "-n", "-f", str(self.conf),
                                      "-i", str(self.pidfile)], stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.work / "rsyslogd.stderr").read_text())
            if listening(self.proc.pid, self.port):
                return
            time.sleep(0.05)
        raise TimeoutError("rsyslogd did not listen")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def lines(self) -> list[str]:
        return self.out.read_text(errors="replace").splitlines() if self.out.exists() else []

    def seqs(self) -> list[int]:
        return [int(m.group(1)) for line in self.lines() if (m := SEQ.search(line))]
