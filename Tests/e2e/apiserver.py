#!/usr/bin/env python3
"""A stand-in Kubernetes API server for the end-to-end bench (Python standard library only).

It speaks the real protocol for what canary-agent reads, over HTTPS with a bearer token:

- lists of ``/api/v1/services``, ``/api/v1/endpoints``, ``/api/v1/nodes`` and
  ``/apis/discovery.k8s.io/v1/endpointslices`` (also namespaced, ``/api/v1/namespaces/NS/services``),
  with ``labelSelector``/``fieldSelector`` (equality based), ``limit``/``continue`` paging and the
  list's ``resourceVersion``;
- ``watch=true`` as a chunked stream of newline-delimited JSON events (ADDED, MODIFIED, DELETED,
  BOOKMARK when ``allowWatchBookmarks=true``, ERROR), replayed from ``resourceVersion``, ended after
  ``timeoutSeconds``; a resource version older than the kept history answers 410 Gone;
- ``POST /api/v1/namespaces/NS/events`` (stored; 409 AlreadyExists for a name already used).

Objects are stored as given (shaped as the Kubernetes API reference gives Service, EndpointSlice,
Endpoints and Node); the server fills ``metadata.uid``, ``resourceVersion``, ``creationTimestamp``.

Three ways to drive it:

1. In process (the perf bench): ``import apiserver; server = apiserver.start(directory)``, then
   ``apiserver.put(obj)``, ``apiserver.delete(kind, namespace, name)``, ``server.go_down(seconds)``,
   ``server.gone_next_watch()``, ``server.events()``; ``apiserver.stop()``.
2. As a process: ``python3 apiserver.py serve --dir DIR`` writes ``DIR/kubeconfig``, ``DIR/ca.crt``
   and ``DIR/apiserver.json`` (ports, token, pid) and serves until SIGTERM. Its control API is plain
   HTTP on 127.0.0.1 (``control_port`` in apiserver.json), wrapped by :class:`ControlClient`.
3. From a shell: ``python3 apiserver.py ctl --dir DIR put FILE.json|-``, ``delete KIND NS NAME``,
   ``gone [http|error]``, ``down SECONDS``, ``drop``, ``bookmark``, ``events``, ``requests``, ``objects``.

Control API (JSON bodies): ``POST /objects`` (one object or a list: create or replace),
``DELETE /objects/KIND/NAMESPACE/NAME`` (``_`` for cluster-scoped), ``POST /gone?mode=http|error``
(the next watch of each collection is answered 410 Gone, as HTTP 410 or a 200 with an ERROR Status
event; every open watch gets the ERROR event now), ``POST /down?seconds=N`` (close the listener and
every connection, come back on the same port after N seconds; returns at once),
``POST /drop`` (cut every watch with no final chunk), ``POST /bookmark``,
``GET /events``, ``GET /requests``, ``GET /objects``, ``GET /health``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import http.server
import json
import os
import queue
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import datetime, timezone

__all__ = ["APIServer", "ControlClient", "start", "stop", "put", "delete", "server"]

# path → (kind, apiVersion, namespaced)
COLLECTIONS = {
    "/api/v1/services": ("Service", "v1", True),
    "/api/v1/endpoints": ("Endpoints", "v1", True),
    "/api/v1/nodes": ("Node", "v1", False),
    "/apis/discovery.k8s.io/v1/endpointslices": ("EndpointSlice", "discovery.k8s.io/v1", True),
}
KIND_TO_PATH = {kind: path for path, (kind, _, _) in COLLECTIONS.items()}
KIND_ALIASES = {
    "service": "Service", "services": "Service", "svc": "Service",
    "endpoints": "Endpoints", "node": "Node", "nodes": "Node",
    "endpointslice": "EndpointSlice", "endpointslices": "EndpointSlice",
}


def normalize_kind(kind: str) -> str:
    return KIND_ALIASES.get(kind.lower(), kind)


def status_object(code: int, reason: str, message: str) -> dict:
    """A metav1.Status as the API server sends it for errors."""
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message, "reason": reason, "code": code}


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def object_key(obj: dict) -> str:
    metadata = obj.get("metadata") or {}
    name = metadata.get("name", "")
    namespace = metadata.get("namespace")
    return f"{namespace}/{name}" if namespace else name


def selector_matches(obj: dict, label_selector: str | None, field_selector: str | None) -> bool:
    """Equality-based selectors: ``k=v``, ``k==v``, ``k!=v``, ``k``, ``!k``; fields metadata.name/namespace."""
    metadata = obj.get("metadata") or {}
    labels = metadata.get("labels") or {}
    for requirement in (label_selector or "").split(","):
        requirement = requirement.strip()
        if not requirement:
            continue
        if "!=" in requirement:
            key, value = requirement.split("!=", 1)
            if labels.get(key.strip()) == value.strip():
                return False
        elif "=" in requirement:
            key, value = requirement.replace("==", "=").split("=", 1)
            if labels.get(key.strip()) != value.strip():
                return False
        elif requirement.startswith("!"):
            if requirement[1:] in labels:
                return False
        elif requirement not in labels:
            return False
    for requirement in (field_selector or "").split(","):
        if "=" not in requirement:
            continue
        negate = "!=" in requirement
        key, value = requirement.replace("!=", "=").replace("==", "=").split("=", 1)
        field = {"metadata.name": "name", "metadata.namespace": "namespace"}.get(key.strip())
        if field is None:
            continue
        equal = metadata.get(field) == value.strip()
        if equal == negate:
            return False
    return True


class Watcher:
    """One open watch: the handler thread drains its queue onto the connection."""

    def __init__(self, path: str, namespace: str | None, label_selector, field_selector, bookmarks: bool):
        self.path = path
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.bookmarks = bookmarks
        self.events: queue.Queue = queue.Queue()

    def wants(self, obj: dict) -> bool:
        if self.namespace and (obj.get("metadata") or {}).get("namespace") != self.namespace:
            return False
        return selector_matches(obj, self.label_selector, self.field_selector)


class APIServer:
    """The server's state and its two listeners (API over HTTPS, control over plain HTTP)."""

    def __init__(self, directory: str, port: int = 0, control_port: int = 0, token: str = "e2e-token",
                 history_limit: int = 100000, bookmark_interval: float = 20.0, host: str = "127.0.0.1"):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.host = host
        self.port = port
        self.control_port = control_port
        self.token = token
        self.history_limit = history_limit
        self.bookmark_interval = bookmark_interval
        self.lock = threading.RLock()
        self.resource_version = 1000
        self.objects: dict[str, dict[str, dict]] = {path: {} for path in COLLECTIONS}
        self.history: dict[str, list[tuple[int, str, dict]]] = {path: [] for path in COLLECTIONS}
        self.compacted_through: dict[str, int] = {path: 0 for path in COLLECTIONS}
        self.watchers: set[Watcher] = set()
        self.connections: set[socket.socket] = set()
        self.recorded_events: list[dict] = []
        self.requests: list[dict] = []
        self.gone_pending: dict[str, str] = {}  # collection path → "http" | "error"
        self.uid_counter = 0
        self.down_until = 0.0
        self.api_httpd: http.server.ThreadingHTTPServer | None = None
        self.api_thread: threading.Thread | None = None
        self.control_httpd: http.server.ThreadingHTTPServer | None = None
        self.ssl_context: ssl.SSLContext | None = None
        self.ca_path = os.path.join(self.directory, "ca.crt")
        self.kubeconfig_path = os.path.join(self.directory, "kubeconfig")

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> "APIServer":
        self._make_certificates()
        self.ssl_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ssl_context.load_cert_chain(os.path.join(self.directory, "server.crt"),
                                         os.path.join(self.directory, "server.key"))
        self._open_api_listener()
        self.port = self.api_httpd.server_address[1]
        self.control_httpd = _Server((self.host, self.control_port), _ControlHandler)
        self.control_httpd.api = self
        self.control_port = self.control_httpd.server_address[1]
        threading.Thread(target=self.control_httpd.serve_forever, name="control", daemon=True).start()
        threading.Thread(target=self._bookmark_loop, name="bookmarks", daemon=True).start()
        self._write_kubeconfig()
        # Written whole, then renamed: a client waits for the file to exist and reads it at once.
        info_path = os.path.join(self.directory, "apiserver.json")
        with open(info_path + ".tmp", "w") as file:
            json.dump({"url": self.url, "port": self.port, "control_port": self.control_port,
                       "control_url": self.control_url, "token": self.token, "pid": os.getpid(),
                       "kubeconfig": self.kubeconfig_path, "ca": self.ca_path}, file)
        os.replace(info_path + ".tmp", info_path)
        return self

    def stop(self) -> None:
        self._close_api_listener()
        if self.control_httpd:
            self.control_httpd.shutdown()
            self.control_httpd.server_close()

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def control_url(self) -> str:
        return f"http://{self.host}:{self.control_port}"

    def _make_certificates(self) -> None:
        d = self.directory
        if os.path.exists(os.path.join(d, "server.crt")) and os.path.exists(self.ca_path):
            return
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

        def openssl(*arguments: str) -> None:
            subprocess.run(["openssl", *arguments], cwd=d, check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
                "-subj", "/CN=e2e-kubernetes-ca", "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        with open(os.path.join(d, "server.ext"), "w") as file:
            file.write(f"subjectAltName=IP:{self.host},IP:127.0.0.1,DNS:localhost\n"
                       "extendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
        openssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=kube-apiserver")
        openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                "-CAcreateserial", "-out", "server.crt", "-days", "3650", "-extfile", "server.ext")

    def _write_kubeconfig(self) -> None:
        with open(self.ca_path, "rb") as file:
            ca_data = base64.b64encode(file.read()).decode()
        # JSON is YAML: no YAML writer needed.
        kubeconfig = {
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e", "preferences": {},
            "clusters": [{"name": "e2e", "cluster": {"server": self.url, "certificate-authority-data": ca_data}}],
            "users": [{"name": "canary-agent", "user": {"token": self.token}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "canary-agent"}}],
        }
        temporary = self.kubeconfig_path + ".tmp"
        with open(temporary, "w") as file:
            json.dump(kubeconfig, file, indent=2)
        os.replace(temporary, self.kubeconfig_path)

    def _open_api_listener(self) -> None:
        httpd = _Server((self.host, self.port), _APIHandler)
        httpd.api = self
        httpd.ssl_context = self.ssl_context
        self.api_httpd = httpd
        self.api_thread = threading.Thread(target=httpd.serve_forever, name="api", daemon=True)
        self.api_thread.start()

    def _close_api_listener(self) -> None:
        httpd = self.api_httpd
        if httpd is None:
            return
        self.api_httpd = None
        httpd.shutdown()
        httpd.server_close()
        self.drop_watches()
        with self.lock:
            connections = list(self.connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # ---------------------------------------------------------------- objects

    def put(self, obj: dict) -> dict:
        """Creates or replaces an object (by kind, namespace, name): ADDED or MODIFIED to the watchers."""
        kind = obj.get("kind")
        path = KIND_TO_PATH.get(kind)
        if path is None:
            raise ValueError(f"unknown kind {kind!r}")
        with self.lock:
            stored = copy.deepcopy(obj)
            key = object_key(stored)
            existing = self.objects[path].get(key)
            metadata = stored.setdefault("metadata", {})
            self.resource_version += 1
            if existing is not None:
                metadata["uid"] = existing["metadata"]["uid"]
                metadata["creationTimestamp"] = existing["metadata"].get("creationTimestamp", now_rfc3339())
            else:
                self.uid_counter += 1
                metadata.setdefault("uid", f"e2e00000-0000-4000-8000-{self.uid_counter:012d}")
                metadata.setdefault("creationTimestamp", now_rfc3339())
            metadata["resourceVersion"] = str(self.resource_version)
            metadata.setdefault("generation", 1)
            self.objects[path][key] = stored
            self._record(path, "MODIFIED" if existing is not None else "ADDED", stored)
            return copy.deepcopy(stored)

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        """Deletes an object: a DELETED event with its last state at a new resource version."""
        path = KIND_TO_PATH.get(normalize_kind(kind))
        if path is None:
            raise ValueError(f"unknown kind {kind!r}")
        key = f"{namespace}/{name}" if namespace and namespace != "_" else name
        with self.lock:
            obj = self.objects[path].pop(key, None)
            if obj is None:
                return False
            self.resource_version += 1
            obj["metadata"]["resourceVersion"] = str(self.resource_version)
            self._record(path, "DELETED", obj)
            return True

    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        path = KIND_TO_PATH[normalize_kind(kind)]
        key = f"{namespace}/{name}" if namespace and namespace != "_" else name
        with self.lock:
            obj = self.objects[path].get(key)
            return copy.deepcopy(obj) if obj else None

    def _record(self, path: str, event_type: str, obj: dict) -> None:
        history = self.history[path]
        history.append((self.resource_version, event_type, copy.deepcopy(obj)))
        if len(history) > self.history_limit:
            dropped = history[: len(history) - self.history_limit]
            del history[: len(dropped)]
            self.compacted_through[path] = dropped[-1][0]
        event = {"type": event_type, "object": obj}
        for watcher in list(self.watchers):
            if watcher.path == path and watcher.wants(obj):
                watcher.events.put(copy.deepcopy(event))

    # ---------------------------------------------------------------- failures

    def gone_next_watch(self, mode: str = "error") -> None:
        """Answers the next watch of every collection with 410 Gone (``http``: HTTP 410; ``error``:
        200 with an ERROR Status event), ends every open watch with an ERROR 410 event now, and forgets
        the history, so a watch from any resource version seen so far is gone too."""
        with self.lock:
            for path in COLLECTIONS:
                self.gone_pending[path] = mode
                self.compacted_through[path] = self.resource_version
                self.history[path].clear()
            for watcher in list(self.watchers):
                watcher.events.put({"type": "ERROR", "object": status_object(
                    410, "Expired", "too old resource version: watch history compacted")})
                watcher.events.put(None)

    def drop_watches(self) -> None:
        """Cuts every open watch with no final chunk."""
        with self.lock:
            for watcher in list(self.watchers):
                watcher.events.put("drop")

    def send_bookmarks(self) -> None:
        with self.lock:
            for watcher in list(self.watchers):
                if watcher.bookmarks:
                    kind, api_version, _ = COLLECTIONS[watcher.path]
                    watcher.events.put({"type": "BOOKMARK", "object": {
                        "kind": kind, "apiVersion": api_version,
                        "metadata": {"resourceVersion": str(self.resource_version),
                                     "annotations": {"k8s.io/initial-events-end": "false"}}}})

    def go_down(self, seconds: float, background: bool = True) -> None:
        """Closes the listener and every connection; listens again on the same port after ``seconds``."""
        self.down_until = time.monotonic() + seconds
        self._close_api_listener()

        def come_back() -> None:
            time.sleep(max(0.0, self.down_until - time.monotonic()))
            for _ in range(100):
                try:
                    self._open_api_listener()
                    break
                except OSError:
                    time.sleep(0.2)
            self.down_until = 0.0

        if background:
            threading.Thread(target=come_back, name="come-back", daemon=True).start()
        else:
            come_back()

    @property
    def is_down(self) -> bool:
        return self.api_httpd is None

    def events(self) -> list[dict]:
        with self.lock:
            return copy.deepcopy(self.recorded_events)

    def _bookmark_loop(self) -> None:
        while True:
            time.sleep(self.bookmark_interval)
            self.send_bookmarks()

    # ---------------------------------------------------------------- serving (called by handlers)

    def handle_api(self, handler: "_APIHandler", method: str) -> None:
        parsed = urllib.parse.urlsplit(handler.path)
        path = parsed.path.rstrip("/") or "/"
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query, keep_blank_values=True).items()}
        authorization = handler.headers.get("Authorization", "")
        with self.lock:
            self.requests.append({"time": time.time(), "method": method, "path": path, "query": query,
                                  "authorized": authorization == f"Bearer {self.token}"})
            del self.requests[:-5000]
        if authorization != f"Bearer {self.token}":
            handler.send_json(401, status_object(401, "Unauthorized", "Unauthorized"))
            return
        body = handler.read_body()
        # Namespaced forms: /api/v1/namespaces/NS/services → collection /api/v1/services in NS.
        namespace = None
        parts = path.split("/")
        if "namespaces" in parts:
            index = parts.index("namespaces")
            if index + 2 < len(parts):
                namespace = parts[index + 1]
                collection = "/".join(parts[:index] + parts[index + 2:])
            else:
                collection = path
        else:
            collection = path
        if method == "POST" and collection == "/api/v1/events" and namespace:
            self._create_event(handler, namespace, body)
            return
        if method != "GET" or collection not in COLLECTIONS:
            handler.send_json(404, status_object(404, "NotFound", "the server could not find the requested resource"))
            return
        if query.get("watch") in ("true", "1"):
            self._watch(handler, collection, namespace, query)
        else:
            self._list(handler, collection, namespace, query)

    def _create_event(self, handler: "_APIHandler", namespace: str, body: bytes) -> None:
        try:
            event = json.loads(body or b"null")
            if not isinstance(event, dict):
                raise ValueError("not an object")
        except ValueError:
            handler.send_json(400, status_object(400, "BadRequest", "the body is not a JSON object"))
            return
        name = (event.get("metadata") or {}).get("name")
        with self.lock:
            if name and any((e.get("metadata") or {}).get("name") == name and
                            (e.get("metadata") or {}).get("namespace", namespace) == namespace
                            for e in self.recorded_events):
                handler.send_json(409, status_object(409, "AlreadyExists", f'events "{name}" already exists'))
                return
            self.resource_version += 1
            stored = copy.deepcopy(event)
            metadata = stored.setdefault("metadata", {})
            metadata.setdefault("namespace", namespace)
            metadata["resourceVersion"] = str(self.resource_version)
            metadata.setdefault("creationTimestamp", now_rfc3339())
            self.recorded_events.append(stored)
        handler.send_json(201, stored)

    def _list(self, handler: "_APIHandler", path: str, namespace: str | None, query: dict) -> None:
        kind, api_version, _ = COLLECTIONS[path]
        start_after = ""
        with self.lock:
            list_version = self.resource_version
            if query.get("continue"):
                try:
                    token = json.loads(base64.urlsafe_b64decode(query["continue"].encode()))
                    list_version = int(token["rv"])
                    start_after = token["start"]
                except (ValueError, KeyError, TypeError):
                    handler.send_json(400, status_object(400, "BadRequest", "invalid continue token"))
                    return
            keys = sorted(self.objects[path])
            selected = []
            for key in keys:
                obj = self.objects[path][key]
                if namespace and obj["metadata"].get("namespace") != namespace:
                    continue
                if key > start_after and selector_matches(obj, query.get("labelSelector"), query.get("fieldSelector")):
                    selected.append((key, obj))
            try:
                limit = int(query.get("limit") or 0)
            except ValueError:
                limit = 0
            metadata = {"resourceVersion": str(list_version)}
            if limit > 0 and len(selected) > limit:
                metadata["remainingItemCount"] = len(selected) - limit
                selected = selected[:limit]
                metadata["continue"] = base64.urlsafe_b64encode(
                    json.dumps({"rv": list_version, "start": selected[-1][0]}).encode()).decode()
            items = []
            for _, obj in selected:
                item = copy.deepcopy(obj)
                # Items of a typed list carry no kind or apiVersion.
                item.pop("kind", None)
                item.pop("apiVersion", None)
                items.append(item)
        handler.send_json(200, {"kind": kind + "List", "apiVersion": api_version, "metadata": metadata, "items": items})

    def _watch(self, handler: "_APIHandler", path: str, namespace: str | None, query: dict) -> None:
        from_version = query.get("resourceVersion") or ""
        watcher = Watcher(path, namespace, query.get("labelSelector"), query.get("fieldSelector"),
                          query.get("allowWatchBookmarks") == "true")
        gone_message = None
        with self.lock:
            gone_mode = self.gone_pending.pop(path, None)
            if from_version not in ("", "0"):
                try:
                    version = int(from_version)
                except ValueError:
                    handler.send_json(400, status_object(400, "BadRequest", f"invalid resourceVersion {from_version}"))
                    return
                if version < self.compacted_through[path] or gone_mode:
                    gone_mode = gone_mode or "http"
                    gone_message = f"too old resource version: {version} ({self.compacted_through[path]})"
            elif gone_mode:
                gone_message = "too old resource version: 0"
            if gone_message is None:
                if from_version in ("", "0"):
                    for obj in self.objects[path].values():
                        if watcher.wants(obj):
                            watcher.events.put({"type": "ADDED", "object": copy.deepcopy(obj)})
                else:
                    for version, event_type, obj in self.history[path]:
                        if version > int(from_version) and watcher.wants(obj):
                            watcher.events.put({"type": event_type, "object": copy.deepcopy(obj)})
                self.watchers.add(watcher)
        if gone_message is not None and gone_mode == "http":
            handler.send_json(410, status_object(410, "Expired", gone_message))
            return
        try:
            timeout = float(query.get("timeoutSeconds") or 1800)
        except ValueError:
            timeout = 1800.0
        deadline = time.monotonic() + timeout
        try:
            handler.start_chunked(200)
            if gone_message is not None:
                handler.write_chunk(json.dumps({"type": "ERROR", "object": status_object(410, "Expired", gone_message)}) + "\n")
                handler.end_chunked()
                return
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    handler.end_chunked()
                    return
                try:
                    event = watcher.events.get(timeout=min(remaining, 1.0))
                except queue.Empty:
                    continue
                if event == "drop":
                    handler.abort()
                    return
                if event is None:
                    handler.end_chunked()
                    return
                handler.write_event(json.dumps(event, separators=(",", ":")) + "\n")
        except OSError:
            handler.close_connection = True
        finally:
            with self.lock:
                self.watchers.discard(watcher)

    # ---------------------------------------------------------------- control API

    def handle_control(self, handler: "_ControlHandler", method: str) -> None:
        parsed = urllib.parse.urlsplit(handler.path)
        path = parsed.path
        query = {k: v[-1] for k, v in urllib.parse.parse_qs(parsed.query).items()}
        body = handler.read_body()
        try:
            if method == "GET" and path == "/health":
                handler.send_json(200, {"ok": True, "down": self.is_down, "resourceVersion": self.resource_version})
            elif method == "POST" and path == "/objects":
                payload = json.loads(body)
                objects = payload if isinstance(payload, list) else [payload]
                if isinstance(payload, dict) and payload.get("kind") == "List":
                    objects = payload.get("items", [])
                handler.send_json(200, [self.put(obj) for obj in objects])
            elif method == "DELETE" and path.startswith("/objects/"):
                _, _, kind, namespace, name = path.split("/", 4)
                found = self.delete(kind, namespace, name)
                handler.send_json(200 if found else 404, {"deleted": found})
            elif method == "GET" and path == "/objects":
                with self.lock:
                    handler.send_json(200, {p: list(o.values()) for p, o in self.objects.items()})
            elif method == "POST" and path == "/gone":
                self.gone_next_watch(query.get("mode", "error"))
                handler.send_json(200, {"ok": True})
            elif method == "POST" and path == "/down":
                self.go_down(float(query.get("seconds", "60")))
                handler.send_json(200, {"ok": True})
            elif method == "POST" and path == "/drop":
                self.drop_watches()
                handler.send_json(200, {"ok": True})
            elif method == "POST" and path == "/bookmark":
                self.send_bookmarks()
                handler.send_json(200, {"ok": True})
            elif method == "GET" and path == "/events":
                handler.send_json(200, self.events())
            elif method == "GET" and path == "/requests":
                with self.lock:
                    handler.send_json(200, list(self.requests))
            elif method == "GET" and path == "/watches":
                with self.lock:
                    handler.send_json(200, [{"path": w.path, "fieldSelector": w.field_selector} for w in self.watchers])
            else:
                handler.send_json(404, {"error": f"no control endpoint {method} {path}"})
        except (ValueError, KeyError) as error:
            handler.send_json(400, {"error": str(error)})


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    api: APIServer
    ssl_context: ssl.SSLContext | None = None

    def get_request(self):
        connection, address = super().get_request()
        if self.ssl_context is not None:
            connection = self.ssl_context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return connection, address

    def handle_error(self, request, client_address):
        pass  # a client that went away mid-request is ordinary here


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "e2e-apiserver"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name
        pass

    def read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def send_json(self, code: int, payload) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def start_chunked(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()

    def write_chunk(self, text: str | bytes) -> None:
        data = text.encode() if isinstance(text, str) else text
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def write_event(self, line: str) -> None:
        """One event, cut into three uneven chunks as a proxy might: the client must reassemble."""
        data = line.encode()
        first, second = len(data) // 3, len(data) * 2 // 3 + 1
        for piece in (data[:first], data[first:second], data[second:]):
            self.write_chunk(piece)

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def abort(self) -> None:
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class _APIHandler(_Handler):
    def setup(self):
        try:
            self.request.do_handshake()
        except (OSError, ssl.SSLError):
            self.request.close()
            raise
        super().setup()
        with self.server.api.lock:
            self.server.api.connections.add(self.request)

    def finish(self):
        with self.server.api.lock:
            self.server.api.connections.discard(self.request)
        try:
            super().finish()
        except OSError:
            pass

    def do_GET(self):
        self.server.api.handle_api(self, "GET")

    def do_POST(self):
        self.server.api.handle_api(self, "POST")

    def do_PUT(self):
        self.server.api.handle_api(self, "PUT")

    def do_PATCH(self):
        self.server.api.handle_api(self, "PATCH")

    def do_DELETE(self):
        self.server.api.handle_api(self, "DELETE")


class _ControlHandler(_Handler):
    def do_GET(self):
        self.server.api.handle_control(self, "GET")

    def do_POST(self):
        self.server.api.handle_control(self, "POST")

    def do_DELETE(self):
        self.server.api.handle_control(self, "DELETE")


# -------------------------------------------------------------------- in-process API (perf bench)

server: APIServer | None = None


def start(directory: str | None = None, port: int = 0, control_port: int = 0, **options) -> APIServer:
    """Starts the module's server in this process (threads); returns it. Writes DIR/kubeconfig."""
    global server
    if server is not None:
        return server
    server = APIServer(directory or tempfile.mkdtemp(prefix="e2e-apiserver."), port, control_port, **options).start()
    return server


def stop() -> None:
    global server
    if server is not None:
        server.stop()
        server = None


def put(obj: dict) -> dict:
    """Creates or replaces ``obj`` on the module's server (see :func:`start`)."""
    if server is None:
        raise RuntimeError("apiserver.start() first")
    return server.put(obj)


def delete(kind: str, namespace: str | None, name: str) -> bool:
    if server is None:
        raise RuntimeError("apiserver.start() first")
    return server.delete(kind, namespace, name)


# -------------------------------------------------------------------- a client for the control API


class ControlClient:
    """Drives a server running as another process through its control API (same methods)."""

    def __init__(self, directory: str):
        with open(os.path.join(directory, "apiserver.json")) as file:
            self.info = json.load(file)
        self.base = self.info["control_url"]
        self.kubeconfig = self.info["kubeconfig"]

    def _call(self, method: str, path: str, payload=None, allow_404: bool = False):
        data = json.dumps(payload).encode() if payload is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method,
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as error:
            if allow_404 and error.code == 404:
                return json.loads(error.read() or b"null")
            raise RuntimeError(f"control {method} {path}: {error.code} {error.read()[:300]!r}") from None

    def put(self, obj):
        return self._call("POST", "/objects", obj)

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        ns = namespace or "_"
        return bool(self._call("DELETE", f"/objects/{kind}/{ns}/{name}", allow_404=True).get("deleted"))

    def gone_next_watch(self, mode: str = "error"):
        return self._call("POST", f"/gone?mode={mode}")

    def go_down(self, seconds: float):
        return self._call("POST", f"/down?seconds={seconds}")

    def drop_watches(self):
        return self._call("POST", "/drop")

    def send_bookmarks(self):
        return self._call("POST", "/bookmark")

    def events(self) -> list:
        return self._call("GET", "/events")

    def requests(self) -> list:
        return self._call("GET", "/requests")

    def watches(self) -> list:
        return self._call("GET", "/watches")

    def objects(self) -> dict:
        return self._call("GET", "/objects")

    def health(self) -> dict:
        return self._call("GET", "/health")


# -------------------------------------------------------------------- command line


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the server until SIGTERM")
    serve.add_argument("--dir", required=True, help="writes kubeconfig, ca.crt, apiserver.json here")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--control-port", type=int, default=0)
    serve.add_argument("--token", default="e2e-token")
    serve.add_argument("--bookmark-interval", type=float, default=20.0)
    serve.add_argument("--objects", help="a JSON file of objects (a list) to create at start")
    ctl = commands.add_parser("ctl", help="drive a running server")
    ctl.add_argument("--dir", required=True)
    ctl.add_argument("action", choices=["put", "delete", "gone", "down", "drop", "bookmark", "events",
                                        "requests", "objects", "health", "watches"])
    ctl.add_argument("args", nargs="*")
    arguments = parser.parse_args(argv)

    if arguments.command == "serve":
        api = APIServer(arguments.dir, arguments.port, arguments.control_port, arguments.token,
                        bookmark_interval=arguments.bookmark_interval, host=arguments.host).start()
        if arguments.objects:
            with open(arguments.objects) as file:
                for obj in json.load(file):
                    api.put(obj)
        stopped = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stopped.set())
        signal.signal(signal.SIGINT, lambda *_: stopped.set())
        print(f"apiserver: serving {api.url} (control {api.control_url}); kubeconfig {api.kubeconfig_path}", flush=True)
        stopped.wait()
        api.stop()
        return 0

    client = ControlClient(arguments.dir)
    action, args = arguments.action, arguments.args
    if action == "put":
        source = sys.stdin if not args or args[0] == "-" else open(args[0])
        result = client.put(json.load(source))
    elif action == "delete":
        if len(args) == 2:
            args = [args[0], "_", args[1]]
        result = client.delete(*args)
    elif action == "gone":
        result = client.gone_next_watch(args[0] if args else "error")
    elif action == "down":
        result = client.go_down(float(args[0]) if args else 60)
    elif action == "drop":
        result = client.drop_watches()
    elif action == "bookmark":
        result = client.send_bookmarks()
    else:
        result = getattr(client, action)()
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
