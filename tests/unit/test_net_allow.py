"""`net_allow` (cmld/net/allow.py), pure logic: which entries a config may hold, and the router's
`allowed` set computed from the running containers."""

from __future__ import annotations

import pytest

from cml_common.messages.container_pb2 import ContainerNetAllow
from cmld.net.addressing import Subnet
from cmld.net.allow import Allow, AllowInvalid, Member, elements, parse

pytestmark = pytest.mark.unit


def entry(**kw: object) -> ContainerNetAllow:
    return ContainerNetAllow(**kw)  # type: ignore[arg-type]


def test_parse_accepts_one_target_a_port_and_tcp_or_udp() -> None:
    got = parse([entry(container="b", port=8080), entry(cml=True, port=53, protocol="udp")])
    assert got == [Allow("b", False, 8080, "tcp"), Allow("", True, 53, "udp")]
    assert parse([]) == []


@pytest.mark.parametrize("kw, why", [
    ({"port": 80}, "exactly one target"),
    ({"container": "", "port": 80}, "exactly one target"),
    ({"container": "b", "cml": True, "port": 80}, "exactly one target"),
    ({"container": "b", "port": 0}, "not in 1..65535"),
    ({"cml": True, "port": 65536}, "not in 1..65535"),
    ({"cml": True, "port": 80, "protocol": "TCP"}, "not one of tcp, udp"),
    ({"cml": True, "port": 80, "protocol": "icmp"}, "not one of tcp, udp"),
])
def test_parse_refuses_what_cannot_be_meant(kw: dict[str, object], why: str) -> None:
    with pytest.raises(AllowInvalid, match=why):
        parse([entry(container="ok", port=1), entry(**kw)])


def member(name: str, *ports: tuple[str, int | None], allows: tuple[Allow, ...] = (), router: bool = False) -> Member:
    return Member(name, router, tuple((p, Subnet(n) if n is not None else None) for p, n in ports), allows)


def test_elements_per_source_port_and_target_address() -> None:
    a = member("a", ("r_1", 1), ("r_2", 2), ("r_9", None),
               allows=(Allow("b", False, 8080, "tcp"), Allow("", True, 9000, "tcp"), Allow("a", False, 1, "tcp"),
                       Allow("gone", False, 2, "udp")))
    b = member("b", ("r_3", 3), ("r_4", None))
    # hosted: the CML is the router, reached at each source port's gateway; the unconfigured
    # ports (no address of cmld's) are neither source nor target; an allow to itself or to a
    # container that is not running gives nothing
    assert elements([a, b], None) == [
        ("r_1", "172.23.1.1", "tcp", 9000), ("r_1", "172.23.3.2", "tcp", 8080),
        ("r_2", "172.23.2.1", "tcp", 9000), ("r_2", "172.23.3.2", "tcp", 8080)]
    # device: the CML behind c0's uplink; a target that is the router (c0) is its gateway address
    c0 = member("c0", router=True)
    z = member("z", ("r_5", 5), allows=(Allow("c0", False, 22, "tcp"), Allow("", True, 53, "udp")))
    assert elements([c0, z], "172.23.0.1") == [("r_5", "172.23.0.1", "udp", 53), ("r_5", "172.23.5.1", "tcp", 22)]
    # nobody allowed anything: an empty set (deny by default)
    assert elements([b, c0, member("y", ("r_6", 6))], "172.23.0.1") == []
