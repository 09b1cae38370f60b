"""A client of the OCI distribution API: what building an image on top of a base needs.

Pull a manifest and blobs (checked against their digests), ask whether a blob is there, mount
one from another repository of the same registry, upload one (from bytes or streamed from
elsewhere), put a manifest.  Plain HTTP only where asked for, or for a loopback registry.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from deploy.oci import INDEX_TYPES, MANIFEST_TYPES, ImageError, sha256_digest
from deploy.oci.auth import Credentials, parse_challenge
from deploy.oci.reference import is_loopback

ACCEPT_MANIFESTS = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))
CHUNK = 1 << 20


class Registry:
    def __init__(self, registry: str, *, plain_http: bool | None = None, credentials: Credentials | None = None,
                 ca_file: str | None = None, timeout: float = 120.0) -> None:
        """``plain_http`` None: HTTPS, except that a loopback registry which does not speak TLS is
        talked to in plain HTTP (as container tools treat a registry on this machine)."""
        self.registry = registry
        self._may_fall_back = plain_http is None and is_loopback(registry)
        self._credentials = credentials
        self._authorization: dict[str, str] = {}  # scope -> Authorization header value
        self._base = f"{'http' if plain_http else 'https'}://{registry}/v2/"
        verify: ssl.SSLContext | bool = True
        if ca_file:
            try:
                verify = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ImageError(f"--ca-file {ca_file}: not a readable PEM bundle ({exc})") from None
        # a loopback registry is reached directly even when the environment names a proxy
        self._client = httpx.Client(verify=verify, timeout=httpx.Timeout(timeout, connect=10.0),
                                    follow_redirects=True, trust_env=not is_loopback(registry))

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # reading

    def manifest(self, name: str, version: str) -> tuple[bytes, str, str]:
        """(bytes, media type, digest) of a manifest or index, by tag or digest."""
        response = self._send("GET", f"{name}/manifests/{version}", _pull(name),
                              headers={"Accept": ACCEPT_MANIFESTS})
        self._check(response, f"manifest {name}:{version}")
        data = response.content
        digest = sha256_digest(data)
        if version.startswith("sha256:") and digest != version:
            raise ImageError(f"{self.registry}/{name}@{version}: the registry sent a manifest whose digest is {digest}")
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        return data, media_type, digest

    def blob(self, name: str, digest: str) -> bytes:
        with self.blob_stream(name, digest) as chunks:
            return b"".join(chunks)

    @contextmanager
    def blob_stream(self, name: str, digest: str) -> Iterator[Iterator[bytes]]:
        """The blob's bytes in chunks; the last chunk is only handed out once the digest matched."""
        request = self._authorized_request("GET", f"{name}/blobs/{digest}", _pull(name))
        response = self._client.send(request, stream=True)
        try:
            if response.status_code == 401 and self._authenticate(response, _pull(name)):
                response.close()
                response = self._client.send(self._authorized_request("GET", f"{name}/blobs/{digest}", _pull(name)),
                                             stream=True)
            if response.status_code != 200:
                response.read()
            self._check(response, f"blob {name}@{digest}")
            yield _verified(response.iter_bytes(CHUNK), digest, f"{self.registry}/{name}@{digest}")
        finally:
            response.close()

    def has_blob(self, name: str, digest: str) -> bool:
        response = self._send("HEAD", f"{name}/blobs/{digest}", _push(name))
        if response.status_code == 404:
            return False
        self._check(response, f"blob {name}@{digest}")
        return True

    # writing

    def mount_blob(self, name: str, digest: str, source: str) -> str | None:
        """Mount ``digest`` from repository ``source``; None when done, else an upload URL to use."""
        response = self._send("POST", f"{name}/blobs/uploads/", _push(name, source),
                              params={"mount": digest, "from": source})
        if response.status_code == 201:
            return None
        self._check(response, f"upload of {name}@{digest}", expect=(202,))
        return self._location(response)

    def upload_blob(self, name: str, digest: str, size: int, content: bytes | Iterable[bytes],
                    location: str | None = None) -> None:
        """A monolithic upload: open a session (unless one is given), then PUT every byte with the digest."""
        if location is None:
            response = self._send("POST", f"{name}/blobs/uploads/", _push(name))
            self._check(response, f"upload of {name}@{digest}", expect=(202,))
            location = self._location(response)
        separator = "&" if "?" in location else "?"
        response = self._send("PUT", f"{location}{separator}digest={digest}", _push(name), content=content,
                               headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
        self._check(response, f"upload of {name}@{digest}", expect=(201,))

    def put_manifest(self, name: str, tag: str, data: bytes, media_type: str) -> str:
        response = self._send("PUT", f"{name}/manifests/{tag}", _push(name), content=data,
                              headers={"Content-Type": media_type})
        self._check(response, f"manifest {name}:{tag}", expect=(201,))
        digest = sha256_digest(data)
        answered = response.headers.get("docker-content-digest")
        if answered and answered != digest:
            raise ImageError(f"{self.registry}/{name}:{tag}: the registry stored digest {answered}, we sent {digest}")
        return digest

    # the HTTP underneath

    def _url(self, path: str) -> str:
        return path if path.startswith(("http://", "https://")) else self._base + path.lstrip("/")

    def _authorized_request(self, method: str, path: str, scope: str, **kwargs: Any) -> httpx.Request:
        request = self._client.build_request(method, self._url(path), **kwargs)
        authorization = self._authorization.get(scope) or self._authorization.get("*")
        if authorization:
            request.headers["Authorization"] = authorization
        return request

    def _send(self, method: str, path: str, scope: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._client.send(self._authorized_request(method, path, scope, **kwargs))
            self._may_fall_back = False  # the scheme answered; keep it
            if response.status_code == 401 and self._authenticate(response, scope):
                response = self._client.send(self._authorized_request(method, path, scope, **kwargs))
            return response
        except httpx.ConnectError as exc:
            if self._may_fall_back and "WRONG_VERSION_NUMBER" in str(exc):
                # a TLS hello answered in plain HTTP: this loopback registry has no TLS
                self._may_fall_back = False
                self._base = self._base.replace("https://", "http://", 1)
                return self._send(method, path.replace("https://", "http://", 1), scope, **kwargs)
            hint = " (for a registry without TLS give --plain-http; for a private CA, --ca-file)" \
                if "SSL" in str(exc) or "certificate" in str(exc).lower() else ""
            raise ImageError(f"cannot reach the registry {self.registry}: {exc}{hint}") from None
        except httpx.TimeoutException:
            raise ImageError(f"the registry {self.registry} did not answer {method} {path} in time") from None
        except httpx.HTTPError as exc:
            raise ImageError(f"{method} {self._url(path)}: {exc}") from None

    def _authenticate(self, response: httpx.Response, scope: str) -> bool:
        """Answer a 401's challenge; False when there is nothing more to try."""
        scheme, params = parse_challenge(response.headers.get("www-authenticate", ""))
        if self._credentials is None and scheme == "basic":
            return False
        if scheme == "basic" and self._credentials is not None:
            if self._authorization.get("*") == self._credentials.basic():
                return False  # these credentials were already refused
            self._authorization["*"] = self._credentials.basic()
            return True
        if scheme == "bearer" and "realm" in params:
            # what this client will do with the repository, and whatever more the registry names
            # (a HEAD asks for pull only; the token must also allow the push that follows it);
            # each scope its own parameter, as token services expect
            scopes = _merge_scopes([*scope.split(), *params.get("scope", "").split()])
            query: list[tuple[str, str | int | float | bool | None]] = [("scope", part) for part in scopes]
            if params.get("service"):
                query.append(("service", params["service"]))
            headers = {"Authorization": self._credentials.basic()} if self._credentials else {}
            answer = self._client.get(params["realm"], params=query, headers=headers)
            if answer.status_code != 200:
                raise ImageError(f"the registry {self.registry} refused a token for {scope} "
                                 f"({answer.status_code}); check the credentials")
            body = answer.json()
            token = body.get("token") or body.get("access_token")
            if not token:
                raise ImageError(f"the token service of {self.registry} answered without a token")
            self._authorization[scope] = f"Bearer {token}"
            return True
        return False

    def _location(self, response: httpx.Response) -> str:
        location = response.headers.get("location")
        if not location:
            raise ImageError(f"the registry {self.registry} opened an upload without a Location")
        return str(response.url.join(location))

    def _check(self, response: httpx.Response, what: str, expect: tuple[int, ...] = (200,)) -> None:
        if response.status_code in expect:
            return
        if response.status_code == 401:
            how = "the credentials were refused" if self._credentials else \
                "it asks for credentials: log in with your container tool or give --username"
            raise ImageError(f"{self.registry}: {what}: {how}")
        if response.status_code == 403:
            raise ImageError(f"{self.registry}: {what}: denied (403); the account may not push to this repository")
        detail = ""
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors)
        except ValueError:
            detail = response.text[:200]
        raise ImageError(f"{self.registry}: {what}: {response.status_code} {detail}".rstrip())


def _pull(name: str) -> str:
    return f"repository:{name}:pull"


def _push(name: str, source: str | None = None) -> str:
    scope = f"repository:{name}:pull,push"
    return f"{scope} repository:{source}:pull" if source else scope


def _merge_scopes(scopes: list[str]) -> list[str]:
    """``repository:a:pull`` and ``repository:a:push,pull`` as one ``repository:a:pull,push``."""
    actions: dict[str, list[str]] = {}
    for scope in scopes:
        resource, _, wanted = scope.rpartition(":")
        merged = actions.setdefault(resource, [])
        merged += [action for action in wanted.split(",") if action and action not in merged]
    return [f"{resource}:{','.join(sorted(wanted))}" for resource, wanted in actions.items()]


def _verified(chunks: Iterator[bytes], digest: str, what: str) -> Iterator[bytes]:
    hasher = hashlib.sha256()
    held: bytes | None = None
    for chunk in chunks:
        hasher.update(chunk)
        if held is not None:
            yield held
        held = chunk
    if "sha256:" + hasher.hexdigest() != digest:
        raise ImageError(f"{what}: the bytes received do not match the digest")
    if held is not None:
        yield held
