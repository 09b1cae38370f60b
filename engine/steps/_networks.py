"""The throttle step's policies by client network (WSO2's throttle IP policies): a client address
in a declared network is denied (403), let through unlimited, or limited by that network's own
limit; an address in none of them gets the ``others`` policy (by default the step's own limit).

The address comes from ``address`` (a template), by default the last entry of the request's
``X-Forwarded-For``: the one the gateway in front appended, which the client cannot forge when
the gateway is the only way in (the NetworkPolicy `interlace k8s` writes admits the gateway
only).  A missing or malformed address matches no network: it gets ``others``.  Networks are
parsed and checked when the flows load (IPv4 and IPv6, ``10.0.0.0/8``, ``2001:db8::/32``, or one
address); the first network that holds the address decides, in the order written.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from engine.compiler import CompileContext, StepConfigError
from engine.errors import Forbidden
from engine.expressions import to_text
from engine.message import Message
from engine.steps._fork import duration_field, seconds

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

ACCESS = ("limit", "allow", "deny")
DEFAULT_ADDRESS = "${headers.\"x-forwarded-for\"}"

_CIDR = {"type": "string", "description": "A network (10.0.0.0/8, 2001:db8::/32) or one address."}
NETWORKS_FIELD: dict[str, Any] = {
    "type": "array", "minItems": 1,
    "description": "Policies by client network, the first that holds the client's address decides: access deny "
                   "(403 network-denied), allow (no limit), or limit (its own limit and per; the default).",
    "items": {"type": "object", "additionalProperties": False, "required": ["cidr"],
              "properties": {
                  "cidr": {"oneOf": [_CIDR, {"type": "array", "minItems": 1, "items": _CIDR}],
                           "description": "A network or an address, or a list of them."},
                  "access": {"enum": list(ACCESS), "description": "limit (default), allow or deny."},
                  "limit": {"type": "integer", "minimum": 1,
                            "description": "With access limit: messages allowed per period (default: the step's)."},
                  "per": duration_field("With access limit: the period (default: the step's)."),
              }}}
OTHERS_FIELD: dict[str, Any] = {
    "enum": list(ACCESS),
    "description": "With networks: what an address in none of them (or none at all) gets: limit (the step's limit "
                   "and per, the default), allow or deny.",
}
ADDRESS_FIELD: dict[str, Any] = {
    "type": "string",
    "description": "With networks: the client's address, a template (default: the last entry of "
                   "X-Forwarded-For, the one the gateway appended).",
}


class NetworkDenied(Forbidden):
    code = "network-denied"
    title = "Network not allowed"


@dataclass(frozen=True)
class Policy:
    """What a network (or ``others``) gets: ``access``, and with limit its limit and period;
    ``name`` keeps its counters apart from the other policies'."""

    access: str
    limit: int
    period: float
    per_text: str
    name: str


class NetworkPolicies:
    """The compiled ``networks``: which policy a message's client address falls under."""

    def __init__(self, config: Any, ctx: CompileContext, default_limit: int | None, default_per: Any) -> None:
        self._address = ctx.template(config.get("address", DEFAULT_ADDRESS), "address")
        self._networks: list[tuple[Network, Policy]] = []
        for index, item in enumerate(config["networks"]):
            policy = _policy(item, ("networks", index), default_limit, default_per, f"n{index}")
            cidrs = item["cidr"] if isinstance(item["cidr"], list) else [item["cidr"]]
            for place, cidr in enumerate(cidrs):
                key = ("networks", index, "cidr", place) if isinstance(item["cidr"], list) else ("networks", index,
                                                                                                 "cidr")
                self._networks.append((_network(cidr, key), policy))
        self.others = _policy({"access": config.get("others", "limit")}, "others", default_limit, default_per,
                              "others")

    def address(self, msg: Message) -> Address | None:
        return client_address(self._address.render(msg))

    def policy(self, address: Address | None) -> Policy:
        if address is not None:
            for network, policy in self._networks:
                if address in network:
                    return policy
        return self.others


def client_address(value: Any) -> Address | None:
    """The address in a header value: the last of a comma-separated list, without a port or brackets."""
    if value is None:
        return None
    text = to_text(value).rsplit(",", 1)[-1].strip()
    if text.startswith("["):  # [2001:db8::1]:443
        text = text[1:].split("]", 1)[0]
    elif text.count(":") == 1:  # 203.0.113.7:5123
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:10.1.2.3 is 10.1.2.3
    return mapped if mapped is not None else address


def denied(address: Address | None) -> NetworkDenied:
    where = f"address {address}" if address is not None else "a request without a usable client address"
    return NetworkDenied(f"{where} is not allowed on this route")


def _network(cidr: Any, key: Any) -> Network:
    try:
        return ipaddress.ip_network(str(cidr), strict=False)
    except ValueError as exc:
        raise StepConfigError(f"not a network or an address: {cidr!r} ({exc})", key) from None


def _policy(item: Any, key: Any, default_limit: int | None, default_per: Any, name: str) -> Policy:
    keys = key if isinstance(key, tuple) else (key,)
    access = item.get("access", "limit")
    if access != "limit":
        for own in ("limit", "per"):
            if own in item:
                raise StepConfigError(f"{own} goes with access: limit (this network's access is {access})",
                                      (*keys, own))
        return Policy(access, 0, 0.0, "", name)
    limit = item.get("limit", default_limit)
    per = item.get("per", default_per)
    if limit is None or per is None:
        missing = " and ".join(k for k, v in (("limit", limit), ("per", per)) if v is None)
        if name == "others":
            raise StepConfigError(f"addresses in none of the networks get the step's own limit (others: limit): "
                                  f"give the step {missing}, or others: allow or deny", keys)
        raise StepConfigError(f"a network limited by the step's own limit needs the step's {missing} (or give "
                              f"this one its own)", keys)
    return Policy("limit", int(limit), seconds(per, (*keys, "per") if "per" in item else "per"), str(per), name)


def plain_key(config: Any, ctx: CompileContext) -> Callable[[Message], str] | None:
    """The step's key template, or None when it names none (with networks: each address its own)."""
    if "key" not in config:
        return None
    template = ctx.template(config["key"], "key")
    return lambda msg: to_text(template.render(msg))
