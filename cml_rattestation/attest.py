"""One attestation of one device: the request with a fresh nonce, the response over TCP or gRPC,
and the verdict of every check. Shared by a single run (`main`) and the fleet mode (`fleet`)."""

from __future__ import annotations

import argparse
import json
import secrets
from pathlib import Path

from cml_common.messages.attestation_pb2 import ADVANCED, RemoteToTpm2d, Tpm2dToRemote
from cml_common.messages.rattestation_config_pb2 import RAttestationConfig
from cml_common.textconfig import ConfigError, load_text_file

from . import checks, transport
from .freshness import FreshnessStore
from .refpolicy import EventLogPolicy

NONCE_LEN = 32
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3


def load_config(path: Path) -> RAttestationConfig:
    cfg = load_text_file(path, RAttestationConfig)
    if cfg.atype == ADVANCED and not cfg.HasField("pcrs"):
        raise ConfigError(f"{path}: Missing PCR bitmap configuration for attestation type advanced")
    if cfg.halg != 32:
        raise ConfigError(f"{path}: halg {cfg.halg}: only SHA256 quotes are produced and checked")
    return cfg


def make_request(cfg: RAttestationConfig, nonce: bytes) -> RemoteToTpm2d:
    req = RemoteToTpm2d(code=RemoteToTpm2d.ATTESTATION_REQ, atype=cfg.atype, qualifyingData=nonce,
                        attest_ima=cfg.verify_ima, attest_containers=cfg.verify_containers,
                        attest_event_log=cfg.verify_event_log)
    if cfg.atype == ADVANCED:
        req.pcrs = cfg.pcrs
    return req


def attest_one(host: str, cfg: RAttestationConfig, cfg_path: Path, args: argparse.Namespace,
               tls: transport.TlsFiles | None) -> tuple[int, dict[str, object]]:
    name, port = transport.split_host(host, cfg.port or 9505)
    nonce = secrets.token_bytes(NONCE_LEN)
    req = make_request(cfg, nonce)
    try:
        resp = (transport.fetch_grpc(name, port, req, args.timeout, tls) if tls else
                transport.fetch_tcp(name, port, req, args.timeout))
    except transport.TransportError as e:
        return EXIT_UNREACHABLE, {"host": host, "ok": False, "error": str(e), "checks": []}
    return judge(host, cfg, cfg_path, args, nonce, resp)


def judge(host: str, cfg: RAttestationConfig, cfg_path: Path, args: argparse.Namespace, nonce: bytes,
          resp: Tpm2dToRemote) -> tuple[int, dict[str, object]]:
    store = FreshnessStore(args.state_dir) if args.state_dir else None
    ctx = checks.Context(cfg, cfg_path.resolve().parent, nonce, store)
    outcome = checks.verify(ctx, resp)
    ok = outcome.ok(args.strict)
    if ok and store is not None:
        from .tpmstructs import parse_quote

        store.commit(parse_quote(bytes(resp.quoted)))
    if ok and args.make_policy and outcome.replay is not None:
        pol = EventLogPolicy.from_replay(outcome.replay, f"boot of {outcome.device_uuid or host}")
        args.make_policy.write_text(json.dumps(pol, indent=1) + "\n")
    result: dict[str, object] = {"host": host, "ok": ok, "device_uuid": outcome.device_uuid,
                                 "checks": [c.__dict__ for c in outcome.checks]}
    return (EXIT_OK if ok else EXIT_FAILED), result


