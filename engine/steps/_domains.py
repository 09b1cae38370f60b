"""The throttle's caller classes by domain name (WSO2's ``throttle:type="DOMAIN"``): a policy's
``domains`` (``partner.example``, ``*.partner.example``) hold a caller whose address's reverse
name, confirmed forward, is one of them.

- The name is looked up off the event loop (``loop.getnameinfo``, the system's resolver: the
  hosts file, then DNS, as nsswitch says) and then **confirmed forward**: the name must resolve
  back to the caller's address (``loop.getaddrinfo``), or it is not believed.  Whoever controls
  an address's reverse zone can write any name there (``gw.partner.example`` for an attacker's
  address); only the forward zone, the name owner's, proves it (Apache's ``HostnameLookups
  Double``, WSO2's and TCP wrappers' paranoid check).
- Names are cached per address for ``ttl`` (default 5 minutes), at most ``size`` addresses (the
  least recently used go first); lookups of one address at once are made once.  A lookup that
  passes ``timeout`` (default 1 s) or meets a resolver error counts as no name and is tried again
  after at most ``_RETRY_FAILED`` seconds; no name, or one that does not resolve back, is kept
  for ``ttl``.
- A caller without a (confirmed) name matches no ``domains``: it falls to the next policy, and in
  the end to ``others``.
- The system resolver blocks a thread per lookup, for as long as it likes (resolv.conf's timeouts
  and attempts, seconds), whatever ``timeout`` gave up on.  So lookups run on threads of their own
  (``_LOOKUP_THREADS``), never the loop's default executor, which file, SQLite and other work
  share: a hung resolver and a flood of nameless addresses then starve only the name lookups.  At
  most ``_MAX_ASKING`` addresses are looked up at once per throttle step; a caller arriving beyond
  that counts as no name at once (not remembered), rather than queueing behind the others.

Patterns are checked and lower-cased when the flows load: an exact name, or ``*.`` and a suffix
(any name below it, at any depth, not the suffix itself).
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from engine.compiler import StepConfigError
from engine.steps._fork import duration_field, seconds

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Reverse = Callable[[str], Awaitable[str]]
Forward = Callable[[str, int], Awaitable[list[str]]]

DEFAULT_TTL = "5m"
DEFAULT_TIMEOUT = "1s"
DEFAULT_SIZE = 10_000
_RETRY_FAILED = 10.0  # seconds: a timeout or a resolver's trouble is not remembered for the whole ttl
_LOOKUP_THREADS = 4  # threads the system resolver may block, for every throttle step of a worker
_MAX_ASKING = 64  # addresses looked up at once per throttle step; more count as no name for now

_PATTERN = {"type": "string", "description": "A host name (gw.partner.example) or *.suffix (*.partner.example)."}
DOMAINS_FIELD: dict[str, Any] = {
    "oneOf": [_PATTERN, {"type": "array", "minItems": 1, "items": _PATTERN}],
    "description": "The caller's host name (its address's reverse name, confirmed forward) is one of these: an "
                   "exact name or *.suffix (any name below the suffix). A caller without a confirmed name "
                   "matches none.",
}
DOMAIN_LOOKUP_FIELD: dict[str, Any] = {
    "type": "object", "additionalProperties": False,
    "description": "With policies naming domains: how callers' names are looked up (the system resolver, "
                   "reverse then forward).",
    "properties": {
        "ttl": duration_field(f"How long an address's name is remembered (default {DEFAULT_TTL})."),
        "timeout": duration_field(f"A lookup taking longer counts as no name (default {DEFAULT_TIMEOUT})."),
        "size": {"type": "integer", "minimum": 1,
                 "description": f"How many addresses' names are remembered at most (default {DEFAULT_SIZE})."},
    },
}

_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")


@dataclass(frozen=True)
class Domains:
    """A policy's compiled ``domains``: exact names and ``.suffix``es, lower-cased."""

    names: frozenset[str]
    suffixes: tuple[str, ...]

    def holds(self, name: str) -> bool:
        if name in self.names:
            return True
        return any(name.endswith(suffix) for suffix in self.suffixes)


def compile_domains(value: Any, place: tuple[Any, ...]) -> Domains:
    many = isinstance(value, list)
    names: set[str] = set()
    suffixes: list[str] = []
    for index, pattern in enumerate(value if many else [value]):
        key = (*place, index) if many else place
        text = str(pattern).strip().lower().rstrip(".")
        wildcard = text.startswith("*.")
        host = text[2:] if wildcard else text
        labels = host.split(".")
        if not host or len(host) > 253 or not all(_LABEL.match(label) for label in labels):
            raise StepConfigError(f"not a host name or *.suffix: {pattern!r} (letters, digits, - and _ in "
                                  f"dot-separated labels; a * only as the whole first label, as in "
                                  f"*.partner.example)", key)
        if wildcard:
            suffixes.append("." + host)
        else:
            names.add(host)
    return Domains(frozenset(names), tuple(suffixes))


_lookup_threads: ThreadPoolExecutor | None = None
_lookup_threads_lock = threading.Lock()


def _resolver_threads() -> ThreadPoolExecutor:
    """The name lookups' own threads, made at the first lookup (so in each forked worker)."""
    global _lookup_threads
    with _lookup_threads_lock:
        if _lookup_threads is None:
            _lookup_threads = ThreadPoolExecutor(_LOOKUP_THREADS, thread_name_prefix="interlace-names")
        return _lookup_threads


async def system_reverse(address: str) -> str:
    """The address's name from the system resolver; socket.gaierror when it has none."""
    host, _ = await asyncio.get_running_loop().run_in_executor(
        _resolver_threads(), socket.getnameinfo, (address, 0), socket.NI_NAMEREQD)
    return str(host)


async def system_forward(name: str, family: int) -> list[str]:
    """The name's addresses of this family from the system resolver."""
    found = await asyncio.get_running_loop().run_in_executor(
        _resolver_threads(), lambda: socket.getaddrinfo(name, None, family=family, type=socket.SOCK_STREAM))
    return [str(sockaddr[0]) for *_, sockaddr in found]


class CallerNames:
    """Confirmed host names per address, cached (ttl, size) and looked up with a timeout."""

    def __init__(self, config: Any, key: tuple[Any, ...], reverse: Reverse = system_reverse,
                 forward: Forward = system_forward) -> None:
        config = config or {}
        self.ttl = seconds(config.get("ttl", DEFAULT_TTL), (*key, "ttl") if "ttl" in config else key)
        self.timeout = seconds(config.get("timeout", DEFAULT_TIMEOUT),
                               (*key, "timeout") if "timeout" in config else key)
        self.size = int(config.get("size", DEFAULT_SIZE))
        self._reverse = reverse
        self._forward = forward
        self._known: OrderedDict[Address, tuple[str | None, float]] = OrderedDict()  # name, until
        self._asking: dict[Address, asyncio.Future[tuple[str | None, float]]] = {}

    async def name(self, address: Address) -> str | None:
        """The address's confirmed name, lower-cased without a final dot; None without one."""
        known = self._known.get(address)
        if known is not None and known[1] > time.monotonic():
            self._known.move_to_end(address)
            return known[0]
        asking = self._asking.get(address)
        if asking is None:
            if len(self._asking) >= _MAX_ASKING:  # a flood of new addresses: no name, not queued
                return None
            asking = asyncio.ensure_future(self._look_up(address))
            self._asking[address] = asking
            asking.add_done_callback(lambda done: self._settled(address, done))
        name, _ = await asyncio.shield(asking)
        return name

    def _settled(self, address: Address, done: asyncio.Future[tuple[str | None, float]]) -> None:
        self._asking.pop(address, None)
        if done.cancelled() or done.exception() is not None:
            return
        self._known[address] = done.result()
        self._known.move_to_end(address)
        while len(self._known) > self.size:
            self._known.popitem(last=False)

    async def _look_up(self, address: Address) -> tuple[str | None, float]:
        now = time.monotonic()
        try:
            async with asyncio.timeout(self.timeout):
                name = (await self._reverse(str(address))).lower().rstrip(".")
                family = socket.AF_INET if address.version == 4 else socket.AF_INET6
                confirmed = any(_same(found, address) for found in await self._forward(name, family))
        except socket.gaierror as exc:
            # no such name is an answer; a resolver in trouble (EAI_AGAIN, EAI_FAIL) is not
            definite = exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
            return None, now + (self.ttl if definite else min(self.ttl, _RETRY_FAILED))
        except (TimeoutError, OSError, UnicodeError):
            return None, now + min(self.ttl, _RETRY_FAILED)
        return (name if confirmed else None), now + self.ttl


def _same(found: str, address: Address) -> bool:
    try:
        parsed = ipaddress.ip_address(found.split("%", 1)[0])
    except ValueError:
        return False
    mapped = getattr(parsed, "ipv4_mapped", None)
    return (mapped or parsed) == address
