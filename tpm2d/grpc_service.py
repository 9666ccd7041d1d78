"""The attestation evidence over gRPC with mutual TLS (ours; proto/attestation_service.proto).

The same RemoteToTpm2d / Tpm2dToRemote as TCP 9505, but the channel is authenticated both ways:
tpm2d presents its TLS certificate and key (by default scd's device certificate and soft device
key) and accepts only verifiers whose client certificate chains to `--grpc-client-ca`.

grpcio uses BoringSSL, which cannot use a key that lives in the TPM. When the device key is in
the TPM (`tpm_enabled`), give tpm2d a separate TLS key and certificate (`--grpc-cert/--grpc-key`).
The evidence does not depend on the channel: the quote is signed by the TPM key that the device
certificate in the reply names, and the verifier checks that chain itself.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import grpc

from cml_common.messages import attestation_service_pb2
from cml_common.messages.attestation_pb2 import RemoteToTpm2d, Tpm2dToRemote

from .core import Core

log = logging.getLogger(__name__)

_SERVICE = attestation_service_pb2.DESCRIPTOR.services_by_name["Attestation"]
SERVICE_NAME = _SERVICE.full_name
METHOD = f"/{SERVICE_NAME}/Attest"
MAX_MESSAGE = 64 * 1024 * 1024


class GrpcServer:
    def __init__(self, listen: str, core: Core, cert: Path, key: Path, client_ca: Path) -> None:
        self.listen = listen
        self.core = core
        self.cert, self.key, self.client_ca = cert, key, client_ca
        self._server: grpc.aio.Server | None = None
        self.port = 0

    async def _attest(self, req: RemoteToTpm2d, context: Any) -> Tpm2dToRemote:
        peer = context.peer()
        log.info("gRPC attestation request from %s", peer)
        loop = asyncio.get_running_loop()
        return await asyncio.wrap_future(self.core.submit(lambda: self.core.attest(req)), loop=loop)

    async def start(self) -> None:
        try:
            creds = grpc.ssl_server_credentials(
                [(self.key.read_bytes(), self.cert.read_bytes())],
                root_certificates=self.client_ca.read_bytes(), require_client_auth=True)
        except OSError as e:
            raise RuntimeError(f"gRPC attestation service: {e}") from e
        handler = grpc.method_handlers_generic_handler(SERVICE_NAME, {
            "Attest": grpc.unary_unary_rpc_method_handler(
                self._attest, request_deserializer=RemoteToTpm2d.FromString,
                response_serializer=Tpm2dToRemote.SerializeToString),
        })
        server = grpc.aio.server(options=[("grpc.max_send_message_length", MAX_MESSAGE),
                                          ("grpc.max_receive_message_length", 1024 * 1024)])
        server.add_generic_rpc_handlers((handler,))
        self.port = server.add_secure_port(self.listen, creds)
        if not self.port:
            raise RuntimeError(f"gRPC attestation service cannot listen on {self.listen}")
        await server.start()
        self._server = server
        log.info("gRPC attestation service (mutual TLS) on %s (port %d)", self.listen, self.port)

    async def close(self) -> None:
        if self._server is not None:
            await self._server.stop(grace=1.0)
