"""Getting the evidence: the original's TCP protocol (port 9505, framed protobuf) or our gRPC
service over mutual TLS. Both return the raw Tpm2dToRemote."""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path

from cml_common import framing
from cml_common.messages.attestation_pb2 import RemoteToTpm2d, Tpm2dToRemote

MAX_RESPONSE = 64 * 1024 * 1024
GRPC_METHOD = "/cml.attestation.Attestation/Attest"


class TransportError(Exception):
    pass


def split_host(target: str, default_port: int) -> tuple[str, int]:
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    elif target.count(":") == 1:
        host, _, port = target.partition(":")
    else:
        host, port = target, ""
    if port and not port.isdigit():
        raise TransportError(f"bad port in {target!r}")
    return host, int(port) if port else default_port


def fetch_tcp(host: str, port: int, req: RemoteToTpm2d, timeout: float) -> Tpm2dToRemote:
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            framing.send_frame(s, framing.serialize(req))
            body = framing.recv_frame(s, max_size=MAX_RESPONSE)
    except (OSError, framing.FramingError) as e:
        raise TransportError(f"{host}:{port}: {e}") from e
    if body is None:
        raise TransportError(f"{host}:{port} closed the connection without a response")
    try:
        return framing.parse(Tpm2dToRemote, body)
    except framing.MessageError as e:
        raise TransportError(f"{host}:{port}: {e}") from e


@dataclass(frozen=True)
class TlsFiles:
    cert: Path
    key: Path
    ca: Path
    server_name: str | None = None

    def credentials(self) -> object:
        import grpc

        try:
            return grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes(),
                                                private_key=self.key.read_bytes(),
                                                certificate_chain=self.cert.read_bytes())
        except OSError as e:
            raise TransportError(f"TLS files: {e}") from e

    def options(self) -> list[tuple[str, object]]:
        opts: list[tuple[str, object]] = [("grpc.max_receive_message_length", MAX_RESPONSE)]
        if self.server_name:
            opts.append(("grpc.ssl_target_name_override", self.server_name))
        return opts


def fetch_grpc(host: str, port: int, req: RemoteToTpm2d, timeout: float, tls: TlsFiles) -> Tpm2dToRemote:
    import grpc

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    with grpc.secure_channel(target, tls.credentials(), options=tls.options()) as ch:
        call = ch.unary_unary(GRPC_METHOD, request_serializer=RemoteToTpm2d.SerializeToString,
                              response_deserializer=Tpm2dToRemote.FromString)
        try:
            resp: Tpm2dToRemote = call(req, timeout=timeout)
        except grpc.RpcError as e:
            raise TransportError(f"{target}: gRPC {e.code().name}: {e.details()}") from e
    return resp
