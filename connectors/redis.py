"""Redis as an endpoint kind: the shared store of the cache, throttle and idempotency steps
when several replicas must see the same entries and the same counters, and of the aggregate
step's open groups (engine/steps/_groups_redis.py).

```yaml
endpoints:
  shared:
    redis: {url: "${secret.redis-url || 'redis://127.0.0.1:6379/0'}", key_prefix: "orders:"}
```

The client (redis-py's asyncio client, with its connection pool) connects on first use, so
a Redis that is down at start does not stop the engine; the steps decide what a store that
cannot be reached means (a cache misses, a throttle lets through, an idempotent receiver
answers 503).
"""

from __future__ import annotations

from typing import Any, ClassVar
from urllib.parse import urlsplit

from connectors.base import Connector, EndpointContext, register_connector
from engine.errors import BackendUnreachable
from engine.kvstore import RedisStore
from engine.units import parse_duration


def display_url(url: str) -> str:
    """The URL without its userinfo (a Redis URL often carries the password)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


@register_connector("redis")
class RedisEndpoint(Connector):
    SUMMARY: ClassVar[str] = ("A Redis server: the shared store of the cache, throttle, idempotent and aggregate "
                               "steps.")
    SCHEMA: ClassVar[dict[str, Any]] = {
        "type": "object", "additionalProperties": False, "required": ["url"],
        "description": "A Redis server shared by replicas: the store of cache, throttle, idempotent and aggregate "
                       "steps.",
        "properties": {
            "url": {"type": "string", "description": "redis://[:password@]host:port/db or rediss:// for TLS; "
                                                     "put a password in a secret: ${secret.redis-url}."},
            "key_prefix": {"type": "string", "description": "Prefix of every key (default interlace:)."},
            "timeout": {"type": ["string", "number"],
                        "description": "How long one Redis command may take (default 500ms). A duration: seconds "
                                       "as a number, or with a unit: 250ms, 2s."},
        },
    }

    def __init__(self, name: str, config: dict[str, Any], context: EndpointContext | None = None) -> None:
        super().__init__(name, config, context)
        url = str(config["url"])
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"url must start with redis://, rediss:// or unix:// (got {display_url(url)})")
        self._url = url
        self.display = display_url(url)
        self.targets = (self.display,)
        self.prefix = str(config.get("key_prefix", "interlace:"))
        self.timeout = parse_duration(config.get("timeout", "500ms"))
        self._client: Any = None
        self._store: RedisStore | None = None

    @property
    def store(self) -> RedisStore:
        """The store, its client made on first use (inside the serving event loop)."""
        if self._store is None:
            import redis.asyncio

            self._client = redis.asyncio.Redis.from_url(self._url, socket_timeout=self.timeout,
                                                        socket_connect_timeout=self.timeout)
            self._store = RedisStore(self._client, self.prefix)
        return self._store

    async def open(self) -> None:
        """Nothing to open ahead: the pool connects on first use."""

    async def close(self) -> None:
        if self._client is not None:
            client, self._client, self._store = self._client, None, None
            await client.aclose()

    async def check(self) -> None:
        """Readiness (for a required: true endpoint): Redis answers PING."""
        try:
            await self.store.ping()
        except Exception as exc:
            raise BackendUnreachable(f"endpoint {self.name!r} (redis) does not answer",
                                     internal=f"{self.display}: {type(exc).__name__}") from exc

    def needs_server(self) -> bool:
        return True

    def health(self) -> dict[str, Any]:
        return {"kind": "redis", "url": self.display, "connected": self._client is not None}
