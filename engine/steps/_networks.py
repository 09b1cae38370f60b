"""The throttle step's caller policies (WSO2's throttle policy: caller classes by IP range or
domain, each with access allow, deny or control).  ``policies`` (or its older, address-only form
``networks``) is a list read in order; the first whose conditions all hold decides:

- ``cidr``: the client address is in one of these networks (IPv4 or IPv6, or one address);
- ``keys``: the step's ``key`` template renders one of these values (a client id, a tenant);
- ``domains``: the client address's host name, looked up in reverse and confirmed forward, is
  one of these names or below one of these ``*.suffix``es (engine/steps/_domains.py).

A policy says ``access: deny`` (403), ``allow`` (no limit) or ``limit`` (the default: its own
``limit``, ``per`` and ``algorithm``, each defaulting to the step's).  A caller that no policy
matches gets ``others`` (by default the step's own limit).  Policies may overlap: the first one
written that matches wins, as a firewall's rules do.  Networks are parsed and keys gathered into
sets when the flows load; a wrong one is a load error at its line and column.

The address, by default, is the connection's own peer (``${client.address}``, the ASGI scope's
``client``).  With ``settings.http.proxy_headers.trusted`` (the gateway's addresses) it is the
client address that gateway names in X-Forwarded-For, believed from the gateway only; ``address``
takes a template instead (``${headers."x-real-ip"}``), whose value may be a comma-separated list
(the last entry counts, the one the nearest proxy appended).  A missing or malformed address
matches no ``cidr``.  An IPv4-mapped IPv6 address (a dual-stack listener's ::ffff:10.1.2.3) is
its IPv4 address, and a network written that way (::ffff:10.0.0.0/104) the IPv4 network; so
``::/0`` holds IPv6 callers only and ``0.0.0.0/0`` every IPv4 one, mapped or not.  A network
with host bits set (10.1.2.3/8) is a load error: it would name all of 10.0.0.0/8.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Any

from engine.compiler import CompileContext, StepConfigError
from engine.errors import Forbidden
from engine.expressions import to_text
from engine.message import CLIENT, Message
from engine.steps._domains import DOMAINS_FIELD, CallerNames, Domains, compile_domains
from engine.steps._fork import duration_field, seconds

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

ACCESS = ("limit", "allow", "deny")
ALGORITHMS = ("token_bucket", "sliding_window")

_CIDR = {"type": "string", "description": "A network (10.0.0.0/8, 2001:db8::/32) or one address."}
_CIDRS = {"oneOf": [_CIDR, {"type": "array", "minItems": 1, "items": _CIDR}],
          "description": "A network or an address, or a list of them."}
_LIMIT_PROPERTIES: dict[str, Any] = {
    "access": {"enum": list(ACCESS), "description": "limit (default), allow or deny."},
    "limit": {"type": "integer", "minimum": 1,
              "description": "With access limit: messages allowed per period (default: the step's)."},
    "per": duration_field("With access limit: the period (default: the step's)."),
}
NETWORKS_FIELD: dict[str, Any] = {
    "type": "array", "minItems": 1,
    "description": "Policies by client network, the first that holds the client's address decides: access deny "
                   "(403 network-denied), allow (no limit), or limit (its own limit and per; the default). "
                   "policies does the same and matches keys too.",
    "items": {"type": "object", "additionalProperties": False, "required": ["cidr"],
              "properties": {"cidr": _CIDRS, **_LIMIT_PROPERTIES}}}
_KEY_VALUE = {"type": ["string", "integer"]}
POLICIES_FIELD: dict[str, Any] = {
    "type": "array", "minItems": 1,
    "description": "Caller policies, read in order; the first whose cidr, keys and domains all hold decides (they may "
                   "overlap: first match wins): access deny (403 caller-denied), allow (no limit) or limit (its "
                   "own limit, per and algorithm, each defaulting to the step's). A caller none matches gets "
                   "others.",
    "items": {"type": "object", "additionalProperties": False,
              "properties": {
                  "cidr": {**_CIDRS, "description": "The client address is in one of these networks or addresses."},
                  "keys": {"oneOf": [_KEY_VALUE, {"type": "array", "minItems": 1, "items": _KEY_VALUE}],
                           "description": "The step's key renders one of these values (a client id, a tenant)."},
                  "domains": DOMAINS_FIELD,
                  **_LIMIT_PROPERTIES,
                  "algorithm": {"enum": list(ALGORITHMS), "description": "With access limit: default the step's."},
              }}}
OTHERS_FIELD: dict[str, Any] = {
    "enum": list(ACCESS),
    "description": "With networks or policies: what a caller none of them matches gets: limit (the step's limit "
                   "and per, the default), allow or deny.",
}
ADDRESS_FIELD: dict[str, Any] = {
    "type": "string",
    "description": "With networks or policies: the client's address, a template (default: the connection's "
                   "peer, ${client.address}; behind settings.http.proxy_headers the address the trusted gateway "
                   "names in X-Forwarded-For).",
}


class NetworkDenied(Forbidden):
    code = "network-denied"
    title = "Network not allowed"


class CallerDenied(Forbidden):
    code = "caller-denied"
    title = "Caller not allowed"


@dataclass(frozen=True)
class Policy:
    """What a matching caller gets: ``access``, and with limit its limit, period and algorithm;
    ``name`` keeps its counters apart from the other policies'; ``by_key``: it matched a key, so
    a denial does not name the address."""

    access: str
    limit: int
    period: float
    per_text: str
    algorithm: str
    name: str
    by_key: bool = False


@dataclass(frozen=True)
class _Rule:
    # (IP version, network address, netmask) as integers: a membership test is a mask and a
    # compare (``address in network`` costs ~10x more); None: any address
    networks: tuple[tuple[int, int, int], ...] | None
    keys: frozenset[str] | None  # None: any key
    domains: Domains | None  # None: any name, or none
    policy: Policy


class _Unasked:
    """The caller's name before anyone looked it up (None is: looked up, it has none)."""


UNASKED = _Unasked()


class CallerPolicies:
    """The compiled ``policies`` (or ``networks``): which policy a message falls under."""

    def __init__(self, config: Any, ctx: CompileContext, field: str) -> None:
        self.field = field
        self.denial: type[Forbidden] = NetworkDenied if field == "networks" else CallerDenied
        address = config.get("address")
        self._address = ctx.template(address, "address") if address is not None else None
        self._key = ctx.template(config["key"], "key") if "key" in config else None
        defaults = (config.get("limit"), config.get("per"), config.get("algorithm", "token_bucket"))
        self._rules: list[_Rule] = []
        for index, item in enumerate(config[field]):
            place = (field, index)
            if "cidr" not in item and "keys" not in item and "domains" not in item:
                raise StepConfigError("a policy matches callers by cidr (their address), keys (values of the "
                                      "step's key) or domains (their host name), or several: give one", place)
            if "keys" in item and self._key is None:
                raise StepConfigError("keys match the value of the step's key template: give the step a key, "
                                      "e.g. ${headers.\"x-client-id\"}", (*place, "keys"))
            keys = _listed(item.get("keys"))
            policy = _policy(item, place, defaults, f"p{index}", by_key="keys" in item)
            domains = compile_domains(item["domains"], (*place, "domains")) if "domains" in item else None
            self._rules.append(_Rule(_networks(item, place), frozenset(map(str, keys)) if keys else None, domains,
                                     policy))
        self.others = _policy({"access": config.get("others", "limit")}, ("others",), defaults, "others",
                              by_key=self._key is not None and field == "policies")
        self.reads_names = any(r.domains is not None for r in self._rules)
        if "domain_lookup" in config and not self.reads_names:
            raise StepConfigError("domain_lookup says how callers' names are looked up: it goes with policies "
                                  "that name domains", "domain_lookup")
        self.names = CallerNames(config.get("domain_lookup"), ("domain_lookup",)) if self.reads_names else None
        self.reads_address = (self._address is not None or self.reads_names
                              or any(r.networks is not None for r in self._rules))

    def address(self, msg: Message) -> Address | None:
        if self._address is None:
            return peer_address(msg)
        return client_address(self._address.render(msg))

    def key(self, msg: Message) -> str | None:
        return to_text(self._key.render(msg)) if self._key is not None else None

    async def name(self, address: Address | None) -> str | None:
        """The caller's confirmed host name (policies with domains only), None without one."""
        if address is None or self.names is None:
            return None
        return await self.names.name(address)

    def policy(self, address: Address | None, key: str | None, name: str | _Unasked | None = None) -> Policy | None:
        """The first policy that holds; None when a rule with domains is reached and the name is
        UNASKED (look it up and ask again: the rules before it needed no lookup)."""
        version, ip = (address.version, int(address)) if address is not None else (0, 0)
        for rule in self._rules:
            if rule.networks is not None:
                for net_version, net, mask in rule.networks:
                    if net_version == version and ip & mask == net:
                        break
                else:
                    continue
            if rule.keys is not None and key not in rule.keys:
                continue
            if rule.domains is not None:
                if isinstance(name, _Unasked):
                    return None
                if name is None or not rule.domains.holds(name):
                    continue
            return rule.policy
        return self.others

    def denied(self, policy: Policy, address: Address | None) -> Forbidden:
        if policy.by_key:  # the key may be a credential (an API key): never echoed
            return self.denial("this caller is not allowed on this route")
        where = f"address {address}" if address is not None else "a request without a usable client address"
        return self.denial(f"{where} is not allowed on this route")


# the peer addresses seen, parsed once each: a facade's callers are a bounded set (its gateway's
# pods, or a few partners); past the bound each new one is parsed again
_PEERS: dict[str, Address | None] = {}


def peer_address(msg: Message) -> Address | None:
    """The connection's peer address (Message.client's), None when the message has none."""
    peer = msg.attributes.get(CLIENT)
    if peer is None:
        return None
    host = peer[0]
    if host in _PEERS:
        return _PEERS[host]
    address = client_address(host)
    if len(_PEERS) < 4096:
        _PEERS[host] = address
    return address


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


def _listed(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def _networks(item: Any, place: tuple[Any, ...]) -> tuple[tuple[int, int, int], ...] | None:
    if "cidr" not in item:
        return None
    many = isinstance(item["cidr"], list)
    found = []
    for index, cidr in enumerate(_listed(item["cidr"])):
        key = (*place, "cidr", index) if many else (*place, "cidr")
        try:
            network: Network = ipaddress.ip_network(str(cidr), strict=False)
        except ValueError as exc:
            raise StepConfigError(f"not a network or an address: {cidr!r} ({exc})", key) from None
        written = str(cidr).split("/", 1)[0]
        if "/" in str(cidr) and ipaddress.ip_address(written) != network.network_address:
            # 10.1.2.3/8 is all of 10.0.0.0/8: a typo for 10.1.2.3 (or /32) would let in or keep out
            # sixteen million addresses
            raise StepConfigError(f"{cidr!r} has host bits set: write the network {network} or the one address "
                                  f"{written}", key)
        network = _unmapped(network)
        found.append((network.version, int(network.network_address), int(network.netmask)))
    return tuple(found)


_MAPPED = ipaddress.IPv6Network("::ffff:0:0/96")


def _unmapped(network: Network) -> Network:
    """An IPv4-mapped IPv6 network (::ffff:10.0.0.0/104) as the IPv4 network it names: a client
    address is taken as IPv4 when it is mapped (client_address), so the network must be too."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96 and network.subnet_of(_MAPPED):
        return ipaddress.IPv4Network((int(network.network_address) & 0xFFFFFFFF, network.prefixlen - 96))
    return network


def _policy(item: Any, keys: tuple[Any, ...], defaults: tuple[Any, Any, str], name: str, *, by_key: bool) -> Policy:
    default_limit, default_per, default_algorithm = defaults
    access = item.get("access", "limit")
    if access != "limit":
        for own in ("limit", "per", "algorithm"):
            if own in item:
                raise StepConfigError(f"{own} goes with access: limit (this policy's access is {access})",
                                      (*keys, own))
        return Policy(access, 0, 0.0, "", default_algorithm, name, by_key)
    limit = item.get("limit", default_limit)
    per = item.get("per", default_per)
    if limit is None or per is None:
        missing = " and ".join(k for k, v in (("limit", limit), ("per", per)) if v is None)
        if name == "others":
            raise StepConfigError(f"callers no policy matches get the step's own limit (others: limit): "
                                  f"give the step {missing}, or others: allow or deny", ())
        raise StepConfigError(f"a policy limited by the step's own limit needs the step's {missing} (or give "
                              f"this one its own)", keys)
    period = seconds(per, (*keys, "per") if "per" in item else "per")
    return Policy("limit", int(limit), period, str(per), item.get("algorithm", default_algorithm), name, by_key)
