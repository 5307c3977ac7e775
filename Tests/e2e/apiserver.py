#!/usr/bin/env python3
"""A stand-in Kubernetes API server for the end-to-end bench (Python standard library only; PyYAML,
when installed, reads the CRD files).

It speaks the real protocol for what canary-agent reads and writes, over HTTPS with a bearer token:

- lists of ``/api/v1/services``, ``/api/v1/endpoints``, ``/api/v1/nodes`` and
  ``/apis/discovery.k8s.io/v1/endpointslices`` (also namespaced, ``/api/v1/namespaces/NS/services``),
  with ``labelSelector``/``fieldSelector`` (equality based), ``limit``/``continue`` paging and the
  list's ``resourceVersion``; ``GET`` of one object by name;
- ``watch=true`` as a chunked stream of newline-delimited JSON events (ADDED, MODIFIED, DELETED,
  BOOKMARK when ``allowWatchBookmarks=true``, ERROR), replayed from ``resourceVersion``, ended after
  ``timeoutSeconds``; a resource version older than the kept history answers 410 Gone;
- ``POST /api/v1/namespaces/NS/events`` (also ``/apis/events.k8s.io/v1/...``; stored as given, whatever
  the involvedObject's kind, e.g. a route; 409 AlreadyExists for a name already used);
- Leases (``coordination.k8s.io/v1``, always served) and, once installed, the Gateway API kinds
  (HTTPRoute, GRPCRoute, TCPRoute, UDPRoute, ReferenceGrant, or any CRD in the channel directory):
  list/watch as above, and GET, POST, PUT, PATCH, DELETE (one or a collection), described below;
- discovery: ``/api``, ``/api/v1``, ``/apis`` (APIGroupList), ``/apis/GROUP`` (APIGroup),
  ``/apis/GROUP/VERSION`` (APIResourceList), ``/version``, in the legacy (unaggregated) form whatever the
  Accept header asks, as a server before 1.26 answers (clients fall back to it); and read-only
  ``apiextensions.k8s.io/v1`` CustomResourceDefinitions (get/list/watch) for the installed CRDs.

Objects are stored as given (shaped as the Kubernetes API reference gives Service, EndpointSlice,
Endpoints and Node); the server fills ``metadata.uid``, ``resourceVersion``, ``creationTimestamp``.
One resource version counter serves every kind, as etcd's revision does.

Gateway API CRDs (``install_crds``): the CustomResourceDefinitions as published, read from
``DIR/CHANNEL/*.yaml`` (DIR: ``--crd-dir``, ``$GATEWAY_API_CRDS`` or /work/shared/gateway-api-crds;
PyYAML when present, else a small loader for the block YAML these files use). Before installation
the group and its collections answer 404; after, each CRD version with ``served: true`` is served and
listed in discovery (versions in Kubernetes' order, the first the preferred one; ``ROUTE/status`` for
versions with the status subresource; ``storageVersionHash`` from the storage version). Installing
another channel replaces the CRDs (objects are kept; watches of a version no longer served end);
removing them deletes their objects (DELETED events) and ends their watches. Every served version
reads and writes the same stored object (no conversion, as ``conversion: None``); the answer carries
the ``apiVersion`` asked for, and a deprecated version adds its ``deprecationWarning`` as a ``Warning``.

Writes behave as kube-apiserver's (custom resources and Leases):

- POST creates (201; 409 AlreadyExists; ``generateName``; a ``resourceVersion`` in the body is a 500
  as etcd3 answers); PUT replaces (a ``metadata.resourceVersion`` other than the stored one is 409
  Conflict, reason ``Conflict``; none at all is 422, as neither kind allows unconditional updates;
  PUT of a missing Lease creates it, of a missing custom resource is 404); PATCH takes
  ``application/merge-patch+json`` and ``application/json-patch+json`` (and, for Leases, strategic
  merge patch, equal to a merge patch for a Lease); a patch carrying a stale ``resourceVersion`` is 409;
  an update that changes nothing stores nothing (same resourceVersion, no event); ``dryRun=All``;
- ``metadata.generation`` of a custom resource is 1 at creation and grows by one when anything but
  ``metadata`` and ``status`` changes (``status`` counts for a kind without the status subresource);
  Leases have none;
- with the status subresource, a write of the resource ignores ``status`` (dropped on create, kept on
  update) and ``PUT``/``PATCH .../NAME/status`` changes only ``status`` (same 409 rule);
- the body is checked against the CRD schema of the version written: unknown fields are pruned (a
  ``Warning`` header each, or 400 with ``fieldValidation=Strict``), ``default:`` values applied
  (recursively, also where a default brings its own defaulted fields), then type, required, enum,
  minimum/maximum, minLength/maxLength, pattern, minItems/maxItems, ``date-time`` format and
  ``x-kubernetes-list-type`` set/map uniqueness are validated; a failure is 422 Invalid whose message
  and causes name the field as the real server does (``spec.rules[0].backendRefs[0].weight: Invalid
  value: 1000001: spec.rules[0].backendRefs[0].weight in body should be less than or equal to
  1000000``). A write of the resource validates everything but ``status``; a status write validates
  ``status`` (what did not change is not re-validated, as ratcheting allows). Not implemented:
  ``x-kubernetes-validations`` (CEL) rules, other string formats, ``multipleOf``, min/maxProperties;
- DELETE returns the object (custom resources) or a Success Status (Leases); ``preconditions`` in the
  DeleteOptions are honoured (409); an object with finalizers gets a ``deletionTimestamp`` and goes
  when an update empties them.

Not implemented: server-side apply (``application/apply-patch+yaml`` is 415), ``managedFields``,
namespaces as objects (any namespace exists), admission, the aggregated discovery format, protobuf.

Three ways to drive it:

1. In process (the perf bench): ``import apiserver; server = apiserver.start(directory)``, then
   ``apiserver.put(obj)``, ``apiserver.delete(kind, namespace, name)``, ``server.go_down(seconds)``,
   ``server.gone_next_watch()``, ``server.events()``, ``server.install_crds("experimental")``,
   ``server.remove_crds()``, ``server.writes()``; ``apiserver.stop()``.
2. As a process: ``python3 apiserver.py serve --dir DIR [--crds CHANNEL] [--crd-dir D]`` writes
   ``DIR/kubeconfig``, ``DIR/ca.crt`` and ``DIR/apiserver.json`` (ports, token, pid) and serves until
   SIGTERM. Its control API is plain HTTP on 127.0.0.1 (``control_port`` in apiserver.json), wrapped by
   :class:`ControlClient`.
3. From a shell: ``python3 apiserver.py ctl --dir DIR put FILE.json|-``, ``delete KIND NS NAME``,
   ``gone [http|error]``, ``down SECONDS``, ``drop``, ``bookmark``, ``events``, ``requests``, ``objects``,
   ``install-crds standard|experimental [CRD_DIR]``, ``remove-crds``, ``crds``, ``writes [SINCE]``.

Control API (JSON bodies): ``POST /objects`` (one object or a list: create or replace, no validation;
any served kind, a custom resource's generation following the rule above),
``DELETE /objects/KIND/NAMESPACE/NAME`` (``_`` for cluster-scoped), ``POST /gone?mode=http|error``
(the next watch of each collection is answered 410 Gone, as HTTP 410 or a 200 with an ERROR Status
event; every open watch gets the ERROR event now), ``POST /down?seconds=N`` (close the listener and
every connection, come back on the same port after N seconds; returns at once),
``POST /drop`` (cut every watch with no final chunk), ``POST /bookmark``,
``POST /crds?channel=standard|experimental[&dir=D]`` (install a channel's CRDs, replacing any
installed; a JSON list of CRD objects as the body installs those instead), ``DELETE /crds`` (remove
them and their objects), ``GET /crds`` (what is installed: channel, served and storage versions),
``GET /writes[?since=T&resource=PLURAL&subresource=status&namespace=NS&name=N&verb=V]`` (every write
through the API, oldest first: time, verb, method, path, resource, kind, namespace, name,
subresource, code, noop, resourceVersion, generation, the request body and the answer),
``GET /events``, ``GET /requests``, ``GET /objects`` (every store but CRDs), ``GET /health``.
"""

from __future__ import annotations

import argparse
import base64
import copy
import glob
import hashlib
import http.server
import json
import os
import queue
import random
import re
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

__all__ = ["APIServer", "ControlClient", "start", "stop", "put", "delete", "server", "load_yaml_documents"]

DEFAULT_CRD_DIRECTORY = "/work/shared/gateway-api-crds"
CRD_CHANNELS = ("standard", "experimental")


def status_object(code: int, reason: str, message: str, details: dict | None = None) -> dict:
    """A metav1.Status as the API server sends it for errors."""
    status = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
              "message": message, "reason": reason}
    if details is not None:
        status["details"] = details
    status["code"] = code
    return status


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


# -------------------------------------------------------------------- YAML (the CRD files)

_PLAIN_INT = re.compile(r"^[-+]?(0|[1-9][0-9_]*)$")
_PLAIN_FLOAT = re.compile(r"^[-+]?([0-9][0-9_]*)?\.[0-9_]*([eE][-+][0-9]+)?$")


def load_yaml_documents(text: str) -> list:
    """The documents of a YAML stream: PyYAML's safe loader when installed, else :class:`MiniYAML`."""
    try:
        import yaml  # noqa: PLC0415 - optional
    except ImportError:
        return MiniYAML.load_all(text)
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's when built with it: 20 times faster
    return [document for document in yaml.load_all(text, Loader=loader) if document is not None]


class MiniYAML:
    """Block YAML as the published CRD files write it, read as PyYAML reads it (YAML 1.1 scalars):
    block mappings and sequences, plain, quoted (with escapes and line folding), literal and folded
    scalars, multi-line plain scalars, comments, and flow collections of scalars on one line.
    No anchors, tags or multi-line flow collections."""

    _ESCAPES = {"0": "\0", "a": "\a", "b": "\b", "t": "\t", "\t": "\t", "n": "\n", "v": "\v", "f": "\f",
                "r": "\r", "e": "\x1b", " ": " ", '"': '"', "/": "/", "\\": "\\", "N": "\x85",
                "_": "\xa0", "L": "\u2028", "P": "\u2029"}

    def __init__(self, text: str):
        self.lines = text.split("\n")
        self.i = 0

    @classmethod
    def load_all(cls, text: str) -> list:
        documents, current = [], []
        for line in text.split("\n"):
            if line.rstrip() in ("---", "..."):
                documents.append("\n".join(current))
                current = []
            else:
                current.append(line)
        documents.append("\n".join(current))
        loaded = [cls(document).document() for document in documents]
        return [document for document in loaded if document is not None]

    def document(self):
        self._skip()
        if self.i >= len(self.lines):
            return None
        return self._node(self._indent(self.lines[self.i]))

    @staticmethod
    def _indent(line: str) -> int:
        return len(line) - len(line.lstrip(" "))

    @staticmethod
    def _is_item(text: str) -> bool:
        return text == "-" or text.startswith("- ")

    def _skip(self) -> None:
        """Past empty and comment lines."""
        while self.i < len(self.lines):
            stripped = self.lines[self.i].strip()
            if stripped and not stripped.startswith("#"):
                return
            self.i += 1

    def _node(self, indent: int):
        return self._sequence(indent) if self._is_item(self.lines[self.i].strip()) else self._mapping(indent)

    def _sequence(self, indent: int) -> list:
        items = []
        while True:
            self._skip()
            if self.i >= len(self.lines):
                return items
            line = self.lines[self.i]
            text = line.strip()
            if self._indent(line) != indent or not self._is_item(text):
                return items
            content = text[1:].lstrip(" ")
            if not content or content.startswith("#"):
                self.i += 1
                self._skip()
                if self.i < len(self.lines) and self._indent(self.lines[self.i]) > indent:
                    items.append(self._node(self._indent(self.lines[self.i])))
                else:
                    items.append(None)
                continue
            inner = indent + (len(text) - len(content))
            if self._is_item(content) or self._split_key(content) is not None:
                self.lines[self.i] = " " * inner + content  # the item's first line, re-indented
                items.append(self._node(inner))
            else:
                self.i += 1
                items.append(self._value(content, indent))

    def _mapping(self, indent: int) -> dict:
        result = {}
        while True:
            self._skip()
            if self.i >= len(self.lines):
                return result
            line = self.lines[self.i]
            text = line.strip()
            if self._indent(line) != indent or self._is_item(text):
                return result
            split = self._split_key(text)
            if split is None:
                raise ValueError(f"line {self.i + 1}: expected 'key: value': {text!r}")
            key, rest = split
            self.i += 1
            if rest == "" or rest.startswith("#"):
                self._skip()
                if self.i < len(self.lines):
                    following = self.lines[self.i]
                    deeper = self._indent(following)
                    if deeper > indent or (deeper == indent and self._is_item(following.strip())):
                        result[key] = self._node(deeper)
                        continue
                result[key] = None
            else:
                result[key] = self._value(rest, indent)

    @staticmethod
    def _split_key(text: str):
        if text[0] in "'\"":
            quote = text[0]
            end = text.find(quote, 1)
            while quote == "'" and end != -1 and text[end + 1:end + 2] == "'":
                end = text.find(quote, end + 2)
            if end == -1 or not text[end + 1:].startswith(":"):
                return None
            rest = text[end + 2:]
            if rest and not rest[0].isspace():
                return None
            key = MiniYAML._unescape(text[1:end]) if quote == '"' else text[1:end].replace("''", "'")
            return key, rest.strip()
        match = re.match(r"^([^#{}\[\],&*!|>'\"%@`][^#]*?)\s*:(\s|$)", text)
        if not match or ": " in match.group(1):
            return None
        return match.group(1), text[match.end():].strip()

    def _value(self, text: str, indent: int):
        """A value beginning on the line just consumed; the node holding it is at ``indent``."""
        if text[0] in "|>":
            return self._block_scalar(text, indent)
        if text[0] in "'\"":
            return self._quoted(text)
        if text[0] in "[{":
            return self._flow(text)
        parts = [self._strip_comment(text)]
        while self.i < len(self.lines):
            line = self.lines[self.i]
            stripped = line.strip()
            if not stripped:  # empty lines inside a multi-line plain scalar are newlines
                j = self.i
                while j < len(self.lines) and not self.lines[j].strip():
                    j += 1
                if j < len(self.lines) and self._indent(self.lines[j]) > indent and \
                        not self.lines[j].strip().startswith("#"):
                    parts.append("\n" * (j - self.i))
                    self.i = j
                    continue
                break
            if self._indent(line) <= indent or stripped.startswith("#"):
                break
            parts.append(self._strip_comment(stripped))
            self.i += 1
        if len(parts) == 1:
            return self._resolve(parts[0])
        folded = parts[0]
        for part in parts[1:]:
            folded += part if part.startswith("\n") or folded.endswith("\n") else " " + part
        return folded

    @staticmethod
    def _strip_comment(text: str) -> str:
        index = text.find(" #")
        return (text[:index] if index != -1 else text).rstrip()

    @staticmethod
    def _resolve(text: str):
        if text in ("", "~", "null", "Null", "NULL"):
            return None
        if text in ("true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"):
            return True
        if text in ("false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"):
            return False
        if _PLAIN_INT.match(text):
            return int(text.replace("_", ""))
        if _PLAIN_FLOAT.match(text) and text not in (".", "-.", "+."):
            return float(text.replace("_", ""))
        return text

    def _block_scalar(self, header: str, indent: int) -> str:
        header = self._strip_comment(header)
        style, chomp, explicit = header[0], "", None
        for char in header[1:]:
            if char in "+-":
                chomp = char
            elif char.isdigit():
                explicit = int(char)
        lines: list[str] = []
        block_indent = indent + explicit if explicit else None
        while self.i < len(self.lines):
            line = self.lines[self.i]
            if line.strip():
                if block_indent is None:
                    block_indent = self._indent(line)
                    if block_indent <= indent:
                        break
                if self._indent(line) < block_indent:
                    break
                lines.append(line[block_indent:])
            else:
                lines.append("")
            self.i += 1
        trailing = 0
        while lines and lines[-1] == "":
            lines.pop()
            trailing += 1
        if not lines:
            return "\n" * trailing if chomp == "+" else ""
        if style == "|":
            body = "\n".join(lines)
        else:  # folded: single breaks between plain lines become spaces
            body, previous_more = lines[0], lines[0].startswith(" ")
            for line in lines[1:]:
                more = line.startswith(" ")
                if line == "":
                    body += "\n"
                elif body.endswith("\n") or more or previous_more:
                    body += ("" if body.endswith("\n") else "\n") + line
                else:
                    body += " " + line
                previous_more = more
        if chomp == "-":
            return body
        return body + "\n" + ("\n" * trailing if chomp == "+" else "")

    def _quoted(self, text: str) -> str:
        quote, raw = text[0], text[1:]
        while True:  # gather lines until the closing quote
            end = self._closing(raw, quote)
            if end != -1:
                break
            if self.i >= len(self.lines):
                raise ValueError("unterminated quoted scalar")
            raw += "\n" + self.lines[self.i]
            self.i += 1
        pieces = raw[:end].split("\n")
        # Folding: a line break is a space, n+1 breaks are n newlines; the white space around a break
        # goes, unless the break is escaped (double quotes: a backslash ending the line).
        folded, empty = pieces[0], 0
        for index, piece in enumerate(pieces[1:], start=1):
            last = index == len(pieces) - 1
            content = piece.lstrip(" \t") if last else piece.strip(" \t")
            if not content and not last:
                empty += 1
                continue
            if quote == '"' and (len(folded) - len(folded.rstrip("\\"))) % 2 == 1:
                folded = folded[:-1] + "\n" * empty + content
            else:
                folded = folded.rstrip(" \t") + ("\n" * empty if empty else " ") + content
            empty = 0
        return folded.replace("''", "'") if quote == "'" else self._unescape(folded)

    @classmethod
    def _unescape(cls, text: str) -> str:
        out, index = [], 0
        while index < len(text):
            char = text[index]
            if char != "\\":
                out.append(char)
                index += 1
                continue
            code = text[index + 1:index + 2]
            width = {"x": 2, "u": 4, "U": 8}.get(code)
            if width:
                out.append(chr(int(text[index + 2:index + 2 + width], 16)))
                index += 2 + width
            else:
                out.append(cls._ESCAPES[code])
                index += 2
        return "".join(out)

    @staticmethod
    def _closing(raw: str, quote: str) -> int:
        index = 0
        while index < len(raw):
            char = raw[index]
            if quote == '"' and char == "\\":
                index += 2
                continue
            if char == quote:
                if quote == "'" and raw[index + 1:index + 2] == "'":
                    index += 2
                    continue
                return index
            index += 1
        return -1

    def _flow(self, text: str):
        text = self._strip_comment(text)
        if text in ("{}", "[]"):
            return {} if text == "{}" else []
        try:
            return json.loads(text)
        except ValueError:
            pass
        if text[0] == "[" and text[-1] == "]":
            return [self._flow_scalar(part.strip()) for part in text[1:-1].split(",") if part.strip()]
        if text[0] == "{" and text[-1] == "}":
            result = {}
            for part in text[1:-1].split(","):
                if part.strip():
                    key, _, value = part.partition(":")
                    result[self._flow_scalar(key.strip())] = self._flow_scalar(value.strip())
            return result
        raise ValueError(f"unsupported flow collection {text!r}")

    def _flow_scalar(self, text: str):
        if text[:1] == '"':
            return self._unescape(text[1:-1])
        if text[:1] == "'":
            return text[1:-1].replace("''", "'")
        return self._resolve(text)


# -------------------------------------------------------------------- resources and their versions

CRUD_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
# The custom resource handler lists its verbs in this order.
CUSTOM_RESOURCE_VERBS = ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"]
SUBRESOURCE_VERBS = ["get", "patch", "update"]
_VERSION_PATTERN = re.compile(r"^v(\d+)(?:(alpha|beta)(\d+))?$")


def version_priority(version: str) -> tuple:
    """Kubernetes' version order: GA before beta before alpha, higher numbers first, others last."""
    match = _VERSION_PATTERN.match(version)
    if not match:
        return (3, 0, 0, version)
    level = {None: 0, "beta": 1, "alpha": 2}[match.group(2)]
    return (level, -int(match.group(1)), -int(match.group(3) or 0), version)


def storage_version_hash(group: str, version: str, kind: str) -> str:
    return base64.b64encode(hashlib.sha256(f"{group}/{version}/{kind}".encode()).digest()[:8]).decode()


class Version:
    """One version of a resource: whether it is served, stored, its schema and subresources."""

    def __init__(self, name: str, served: bool = True, storage: bool = False, schema: dict | None = None,
                 status: bool = False, deprecated: bool = False, deprecation_warning: str | None = None):
        self.name = name
        self.served = served
        self.storage = storage
        self.schema = schema
        self.status = status
        self.deprecated = deprecated
        self.deprecation_warning = deprecation_warning


class Resource:
    """A kind the server knows: names, scope, versions, and how writes treat it.

    ``generation``: ``"spec"`` (custom resources: 1, then +1 when anything but metadata/status changes),
    ``"none"`` (Leases), ``"legacy"`` (the objects the control API puts: as given, else 1).
    """

    def __init__(self, group: str, plural: str, singular: str, kind: str, namespaced: bool,
                 versions: list[Version], key: str | None = None, short_names: tuple = (),
                 categories: tuple = (), custom: bool = False, writable: bool = False,
                 generation: str = "legacy", create_on_update: bool = False, subresources: tuple = (),
                 discovery_only: bool = False):
        self.group = group
        self.plural = plural
        self.singular = singular
        self.kind = kind
        self.namespaced = namespaced
        self.versions = {version.name: version for version in versions}
        self.short_names = list(short_names)
        self.categories = list(categories)
        self.custom = custom
        self.writable = writable or custom
        self.generation = "spec" if custom else generation
        self.create_on_update = create_on_update
        self.extra_subresources = list(subresources)  # discovery entries of built-in kinds
        self.discovery_only = discovery_only
        self.crd: dict | None = None
        self.key = key or f"/apis/{group}/{plural}"

    @classmethod
    def from_crd(cls, crd: dict) -> "Resource":
        spec = crd["spec"]
        names = spec["names"]
        versions = []
        for entry in spec.get("versions") or []:
            schema = ((entry.get("schema") or {}).get("openAPIV3Schema"))
            versions.append(Version(entry["name"], bool(entry.get("served")), bool(entry.get("storage")), schema,
                                    "status" in (entry.get("subresources") or {}), bool(entry.get("deprecated")),
                                    entry.get("deprecationWarning")))
        resource = cls(spec["group"], names["plural"], names.get("singular") or names["kind"].lower(),
                       names["kind"], spec.get("scope", "Namespaced") == "Namespaced", versions,
                       short_names=tuple(names.get("shortNames") or ()),
                       categories=tuple(names.get("categories") or ()), custom=True)
        resource.crd = crd
        return resource

    @property
    def group_resource(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def list_kind(self) -> str:
        return self.kind + "List"

    def api_version(self, version: str) -> str:
        return f"{self.group}/{version}" if self.group else version

    @property
    def storage_version(self) -> str:
        for version in self.versions.values():
            if version.storage:
                return version.name
        return next(iter(self.versions))

    def served_versions(self) -> list[str]:
        return sorted((v.name for v in self.versions.values() if v.served), key=version_priority)

    def has_status(self, version: str) -> bool:
        entry = self.versions.get(version)
        return bool(entry and entry.status)

    def schema(self, version: str) -> dict | None:
        entry = self.versions.get(version)
        return entry.schema if entry else None

    def discovery_entries(self, version: str) -> list[dict]:
        """This resource's entries in the APIResourceList of ``version``."""
        main = {"name": self.plural, "singularName": self.singular, "namespaced": self.namespaced,
                "kind": self.kind, "verbs": CUSTOM_RESOURCE_VERBS if self.custom else CRUD_VERBS}
        if self.short_names:
            main["shortNames"] = self.short_names
        if self.categories:
            main["categories"] = self.categories
        storage = self.versions.get(self.storage_version)
        if not self.custom or (storage is not None and storage.served):
            main["storageVersionHash"] = storage_version_hash(self.group, self.storage_version, self.kind)
        entries = [main]
        subresources = (["status"] if self.has_status(version) else []) + self.extra_subresources
        for subresource in subresources:
            entries.append({"name": f"{self.plural}/{subresource}", "singularName": "",
                            "namespaced": self.namespaced, "kind": self.kind, "verbs": SUBRESOURCE_VERBS})
        return entries


CRD_KEY = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"
LEASES_KEY = "/apis/coordination.k8s.io/v1/leases"

# A Lease's fields in the form of a CRD schema, so that the same pruning and type checks apply.
LEASE_SCHEMA = {
    "type": "object",
    "properties": {
        "apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"},
        "spec": {"type": "object", "properties": {
            "holderIdentity": {"type": "string"},
            "leaseDurationSeconds": {"type": "integer", "format": "int32"},
            "acquireTime": {"type": "string", "format": "date-time"},
            "renewTime": {"type": "string", "format": "date-time"},
            "leaseTransitions": {"type": "integer", "format": "int32"},
            "strategy": {"type": "string"},
            "preferredHolder": {"type": "string"},
        }},
    },
}
LEASE_GATED_FIELDS = ("strategy", "preferredHolder")  # dropped: CoordinatedLeaderElection is off by default


def builtin_resources() -> list[Resource]:
    """The built-in kinds: the four the agent reads (keys are their historical collection paths),
    Leases, and Events and CRDs (served by their own code)."""
    v1 = [Version("v1", storage=True)]
    return [
        Resource("", "services", "service", "Service", True, v1, key="/api/v1/services",
                 short_names=("svc",), categories=("all",), subresources=("status",)),
        Resource("", "endpoints", "endpoints", "Endpoints", True, v1, key="/api/v1/endpoints",
                 short_names=("ep",)),
        Resource("", "nodes", "node", "Node", False, v1, key="/api/v1/nodes", short_names=("no",),
                 subresources=("status",)),
        Resource("", "events", "event", "Event", True, v1, key="/api/v1/events", short_names=("ev",),
                 discovery_only=True),
        Resource("discovery.k8s.io", "endpointslices", "endpointslice", "EndpointSlice", True, v1,
                 key="/apis/discovery.k8s.io/v1/endpointslices"),
        Resource("coordination.k8s.io", "leases", "lease", "Lease", True,
                 [Version("v1", storage=True, schema=LEASE_SCHEMA)], key=LEASES_KEY,
                 writable=True, generation="none", create_on_update=True),
        Resource("apiextensions.k8s.io", "customresourcedefinitions", "customresourcedefinition",
                 "CustomResourceDefinition", False, v1,
                 key=CRD_KEY, short_names=("crd", "crds"),
                 categories=("api-extensions",), subresources=("status",)),
    ]


_CRD_CACHE: dict[tuple, list[dict]] = {}  # (path, mtime, size) → the file's CRDs


class Registry:
    """The kinds served now: the built-in ones and the installed CRDs' (by CRD name)."""

    def __init__(self):
        self.builtin = builtin_resources()
        self.custom: dict[str, Resource] = {}
        self.channel: str | None = None

    def resources(self) -> list[Resource]:
        return self.builtin + list(self.custom.values())

    def stored(self) -> list[Resource]:
        """Resources whose objects live in the generic store."""
        return [r for r in self.resources() if not r.discovery_only]

    def lookup(self, group: str, version: str, plural: str) -> Resource | None:
        for resource in self.resources():
            if resource.group == group and resource.plural == plural:
                entry = resource.versions.get(version)
                return resource if entry is not None and entry.served else None
        return None

    def by_kind(self, kind: str | None) -> Resource | None:
        """By kind, plural, singular or short name, in any case (``svc``, ``TCPRoute``, ``tcproutes``)."""
        if not kind:
            return None
        lowered = kind.lower()
        for resource in self.stored():
            names = [resource.kind.lower(), resource.plural, resource.singular, *resource.short_names]
            if lowered in names:
                return resource
        return None

    def by_key(self, key: str) -> Resource | None:
        return next((r for r in self.stored() if r.key == key), None)

    def groups(self) -> list[dict]:
        """APIGroup documents of every named group, built-in groups first, then CRD groups by name."""
        order: list[str] = []
        versions: dict[str, set] = {}
        for resource in self.resources():
            if not resource.group:
                continue
            if resource.group not in versions:
                order.append(resource.group)
                versions[resource.group] = set()
            versions[resource.group].update(resource.served_versions())
        builtin_groups = [g for g in order if any(r.group == g for r in self.builtin)]
        custom_groups = sorted(g for g in order if g not in builtin_groups)
        documents = []
        for group in builtin_groups + custom_groups:
            served = sorted(versions[group], key=version_priority)
            if not served:
                continue
            entries = [{"groupVersion": f"{group}/{v}", "version": v} for v in served]
            documents.append({"name": group, "versions": entries, "preferredVersion": entries[0]})
        return documents


class Discovery:
    """Discovery documents (legacy form) for the registry's current state."""

    def __init__(self, api: "APIServer"):
        self.api = api

    def document(self, path: str) -> dict | None:
        registry = self.api.registry
        parts = [p for p in path.split("/") if p]
        if parts == ["version"]:
            return {"major": "1", "minor": "33", "gitVersion": "v1.33.0-e2e", "gitCommit": "", "gitTreeState": "clean",
                    "buildDate": "2025-01-01T00:00:00Z", "goVersion": "go1.24", "compiler": "gc",
                    "platform": "linux/amd64"}
        if parts == ["api"]:
            return {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
                {"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.api.host}:{self.api.port}"}]}
        if parts == ["api", "v1"]:
            return self._resource_list("", "v1")
        if parts == ["apis"]:
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": registry.groups()}
        if len(parts) == 2 and parts[0] == "apis":
            group = next((g for g in registry.groups() if g["name"] == parts[1]), None)
            return None if group is None else {"kind": "APIGroup", "apiVersion": "v1", **group}
        if len(parts) == 3 and parts[0] == "apis":
            return self._resource_list(parts[1], parts[2])
        return None

    def _resource_list(self, group: str, version: str) -> dict | None:
        resources = [r for r in self.api.registry.resources()
                     if r.group == group and version in r.served_versions()]
        if not resources:
            return None
        entries = []
        for resource in sorted(resources, key=lambda r: r.plural):
            entries.extend(resource.discovery_entries(version))
        return {"kind": "APIResourceList", "apiVersion": "v1",
                "groupVersion": f"{group}/{version}" if group else version, "resources": entries}


# -------------------------------------------------------------------- errors as the API server words them

OMIT = object()  # a field error that shows no value


def go_quote(text: str) -> str:
    """Go's %q of a string (near enough: JSON's escapes, non-ASCII kept)."""
    return json.dumps(text, ensure_ascii=False)


def go_value(value) -> str:
    """A value as field.Error prints it: %v for numbers and booleans, %q for strings, else JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return go_quote(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def go_float(value: float) -> str:
    """Go's %v of a float64 (strconv 'g', shortest): an exponent below 1e-4 and from 1e21 on."""
    if value != value or value in (float("inf"), float("-inf")):
        return {True: "NaN"}.get(value != value, "+Inf" if value > 0 else "-Inf")
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:
        mantissa, exponent = text.split("e")
        sign = "-" if exponent.startswith("-") else "+"
        digits = exponent.lstrip("+-").rjust(2, "0")
        return f"{mantissa.rstrip('0').rstrip('.') if '.' in mantissa else mantissa}e{sign}{digits}"
    return text


def limit_text(number) -> str:
    """A schema bound as kube-openapi prints it (an integral bound as an integer)."""
    return str(int(number)) if float(number).is_integer() else go_float(float(number))


class FieldError:
    """A field.Error: type, field path, bad value, detail."""

    TEXT = {"FieldValueNotFound": "Not found", "FieldValueRequired": "Required value",
            "FieldValueDuplicate": "Duplicate value", "FieldValueInvalid": "Invalid value",
            "FieldValueNotSupported": "Unsupported value", "FieldValueForbidden": "Forbidden",
            "FieldValueTooLong": "Too long", "FieldValueTooMany": "Too many", "FieldValueTooFew": "Too few",
            "InternalError": "Internal error", "FieldValueTypeInvalid": "Invalid value",
            "FieldValueTooShort": "Too short"}
    NO_VALUE = ("FieldValueRequired", "FieldValueForbidden", "FieldValueTooLong", "FieldValueTooShort",
                "InternalError")

    def __init__(self, error_type: str, field: str, value=OMIT, detail: str = ""):
        self.type = error_type
        self.field = field
        self.value = value
        self.detail = detail

    def body(self) -> str:
        text = self.TEXT[self.type]
        if self.type not in self.NO_VALUE and self.value is not OMIT:
            text = f"{text}: {go_value(self.value)}"
        return f"{text}: {self.detail}" if self.detail else text

    def __str__(self) -> str:
        return f"{self.field}: {self.body()}"

    def cause(self) -> dict:
        return {"reason": self.type, "message": self.body(), "field": self.field}


class APIError(Exception):
    """An error answer: HTTP code and a metav1.Status body."""

    def __init__(self, code: int, reason: str, message: str, details: dict | None = None):
        super().__init__(message)
        self.code = code
        self.status = status_object(code, reason, message, details)


def _details(resource: "Resource", name: str, kind: str | None = None) -> dict:
    details = {"name": name}
    if resource.group:
        details["group"] = resource.group
    details["kind"] = kind or resource.plural
    return details


def not_found(resource: "Resource", name: str) -> APIError:
    return APIError(404, "NotFound", f"{resource.group_resource} {go_quote(name)} not found", _details(resource, name))


def already_exists(resource: "Resource", name: str) -> APIError:
    return APIError(409, "AlreadyExists", f"{resource.group_resource} {go_quote(name)} already exists",
                    _details(resource, name))


OPTIMISTIC_LOCK = "the object has been modified; please apply your changes to the latest version and try again"


def conflict(resource: "Resource", name: str, why: str = OPTIMISTIC_LOCK) -> APIError:
    return APIError(409, "Conflict",
                    f"Operation cannot be fulfilled on {resource.group_resource} {go_quote(name)}: {why}",
                    _details(resource, name))


def invalid(resource: "Resource", name: str, errors: list[FieldError]) -> APIError:
    messages: list[str] = []
    for error in errors:
        if str(error) not in messages:
            messages.append(str(error))
    text = messages[0] if len(messages) == 1 else "[" + ", ".join(messages) + "]"
    details = _details(resource, name, resource.kind)
    details["causes"] = [error.cause() for error in errors]
    return APIError(422, "Invalid", f"{resource.qualified_kind} {go_quote(name)} is invalid: {text}", details)


def bad_request(message: str) -> APIError:
    return APIError(400, "BadRequest", message)


def method_not_allowed() -> APIError:
    return APIError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource", {})


NOT_FOUND_PATH = "the server could not find the requested resource"


# -------------------------------------------------------------------- schema: prune, default, validate

_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_PATTERNS: dict[str, re.Pattern | None] = {}


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def prune(value, schema: dict, path: str, unknown: list[str], root: bool = False) -> None:
    """Drops (in place) the fields the structural schema does not declare, noting their paths."""
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        properties = schema.get("properties")
        additional = schema.get("additionalProperties")
        preserve = schema.get("x-kubernetes-preserve-unknown-fields")
        for name in list(value):
            if root and name in ("apiVersion", "kind", "metadata"):
                continue
            child = _child(path, name)
            if properties is not None and name in properties:
                prune(value[name], properties[name], child, unknown)
            elif isinstance(additional, dict):
                prune(value[name], additional, child, unknown)
            elif additional is True or preserve:
                continue
            else:
                unknown.append(child)
                del value[name]
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            prune(item, schema["items"], f"{path}[{index}]", unknown)


def apply_defaults(value, schema: dict) -> None:
    """Structural defaulting (in place): a null where the schema does not allow one is dropped or
    replaced by the default; a missing field with a default gets a copy; then deeper, defaults too."""
    if not isinstance(schema, dict):
        return
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for name, prop in properties.items():
            if name in value and value[name] is None and not prop.get("nullable"):
                if "default" in prop:
                    value[name] = copy.deepcopy(prop["default"])
                else:
                    del value[name]
            elif name not in value and "default" in prop:
                value[name] = copy.deepcopy(prop["default"])
        additional = schema.get("additionalProperties")
        for name, item in value.items():
            if name in properties:
                apply_defaults(item, properties[name])
            elif isinstance(additional, dict):
                apply_defaults(item, additional)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(item, schema["items"])


def _pattern(pattern: str) -> re.Pattern | None:
    if pattern not in _PATTERNS:
        try:
            _PATTERNS[pattern] = re.compile(pattern)
        except re.error:
            _PATTERNS[pattern] = None  # an ECMA construct Python lacks: not checked
    return _PATTERNS[pattern]


def validate(value, schema: dict, path: str, errors: list[FieldError], list_errors: list[FieldError]) -> None:
    """kube-openapi's schema validation, its messages converted to field errors as apiextensions does."""
    if not isinstance(schema, dict):
        return
    expected = schema.get("type")
    actual = json_type(value)
    if value is None:
        if expected and not schema.get("nullable"):
            errors.append(FieldError("FieldValueTypeInvalid", path, "null",
                                     f'{path} in body must be of type {expected}: "null"'))
        return
    if schema.get("x-kubernetes-int-or-string"):
        if actual not in ("integer", "string"):
            errors.append(FieldError("FieldValueTypeInvalid", path, actual,
                                     f'{path} in body must be of type integer,string: "{actual}"'))
            return
    elif expected:
        fits = (actual == expected or (expected == "number" and actual == "integer")
                or (expected == "integer" and actual == "number" and float(value).is_integer()))
        if not fits:
            errors.append(FieldError("FieldValueTypeInvalid", path, actual,
                                     f'{path} in body must be of type {expected}: "{actual}"'))
            return
    if isinstance(value, str):
        _validate_string(value, schema, path, errors)
    elif actual in ("integer", "number"):
        _validate_number(value, schema, path, errors)
    elif isinstance(value, list):
        _validate_array(value, schema, path, errors, list_errors)
    if "enum" in schema and not any(json_type(v) == actual and v == value for v in schema["enum"]) and \
            not (actual in ("integer", "number") and any(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                        and v == value for v in schema["enum"])):
        allowed = [v if isinstance(v, str) else json.dumps(v) for v in schema["enum"]]
        errors.append(FieldError("FieldValueNotSupported", path, value,
                                 "supported values: " + ", ".join(go_quote(v) for v in allowed)))
    if isinstance(value, dict):
        _validate_object(value, schema, path, errors, list_errors)


def _validate_string(value: str, schema: dict, path: str, errors: list[FieldError]) -> None:
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        limit = int(schema["maxLength"])
        errors.append(FieldError("FieldValueTooLong", path, OMIT,
                                 f"may not be more than {limit} {'byte' if limit == 1 else 'bytes'}"))
    if "minLength" in schema and len(value) < schema["minLength"]:
        errors.append(FieldError("FieldValueInvalid", path, value,
                                 f"{path} in body should be at least {int(schema['minLength'])} chars long"))
    if "pattern" in schema:
        compiled = _pattern(schema["pattern"])
        if compiled is not None and not compiled.search(value):
            errors.append(FieldError("FieldValueInvalid", path, value,
                                     f"{path} in body should match '{schema['pattern']}'"))
    if schema.get("format") == "date-time" and not _DATE_TIME.match(value):
        errors.append(FieldError("FieldValueTypeInvalid", path, value,
                                 f"{path} in body must be of type date-time: {go_quote(value)}"))


def _validate_number(value, schema: dict, path: str, errors: list[FieldError]) -> None:
    if "maximum" in schema:
        maximum = schema["maximum"]
        exclusive = schema.get("exclusiveMaximum")
        if value > maximum or (exclusive and value == maximum):
            words = "less than" if exclusive else "less than or equal to"
            errors.append(FieldError("FieldValueInvalid", path, value,
                                     f"{path} in body should be {words} {limit_text(maximum)}"))
    if "minimum" in schema:
        minimum = schema["minimum"]
        exclusive = schema.get("exclusiveMinimum")
        if value < minimum or (exclusive and value == minimum):
            words = "greater than" if exclusive else "greater than or equal to"
            errors.append(FieldError("FieldValueInvalid", path, value,
                                     f"{path} in body should be {words} {limit_text(minimum)}"))


def _validate_array(value: list, schema: dict, path: str, errors: list[FieldError],
                    list_errors: list[FieldError]) -> None:
    if "minItems" in schema and len(value) < schema["minItems"]:
        errors.append(FieldError("FieldValueInvalid", path, len(value),
                                 f"{path} in body should have at least {int(schema['minItems'])} items"))
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        limit = int(schema["maxItems"])
        errors.append(FieldError("FieldValueTooMany", path, len(value),
                                 f"must have at most {limit} {'item' if limit == 1 else 'items'}"))
    items = schema.get("items")
    if isinstance(items, dict):
        for index, item in enumerate(value):
            validate(item, items, f"{path}[{index}]", errors, list_errors)
    list_type = schema.get("x-kubernetes-list-type")
    if list_type in ("set", "map"):
        keys = schema.get("x-kubernetes-list-map-keys") or []
        seen: list = []
        for index, item in enumerate(value):
            if list_type == "map" and isinstance(item, dict):
                identity = {key: item.get(key) for key in keys if key in item}
            else:
                identity = item
            if identity in seen:
                list_errors.append(FieldError("FieldValueDuplicate", f"{path}[{index}]", identity))
            else:
                seen.append(identity)


def _validate_object(value: dict, schema: dict, path: str, errors: list[FieldError],
                     list_errors: list[FieldError]) -> None:
    for name in schema.get("required") or []:
        if name not in value:
            errors.append(FieldError("FieldValueRequired", _child(path, name)))
    properties = schema.get("properties") or {}
    additional = schema.get("additionalProperties")
    for name in sorted(value):
        if name in properties:
            validate(value[name], properties[name], _child(path, name), errors, list_errors)
        elif isinstance(additional, dict):
            validate(value[name], additional, _child(path, name), errors, list_errors)


def schema_errors(obj: dict, schema: dict | None, fields: tuple[str, ...] | None = None) -> list[FieldError]:
    """The validation errors of ``obj`` (only its top-level ``fields`` when given; never metadata)."""
    if not schema:
        return []
    errors: list[FieldError] = []
    list_errors: list[FieldError] = []
    properties = schema.get("properties") or {}
    for name in schema.get("required") or []:
        if name not in obj and (fields is None or name in fields):
            errors.append(FieldError("FieldValueRequired", name))
    for name in sorted(obj):
        if name in ("apiVersion", "kind", "metadata") or (fields is not None and name not in fields):
            continue
        if name in properties:
            validate(obj[name], properties[name], name, errors, list_errors)
    return errors + list_errors


def name_errors(metadata: dict) -> list[FieldError]:
    name = metadata.get("name")
    if not name:
        return [FieldError("FieldValueRequired", "metadata.name", OMIT, "name or generateName is required")]
    errors = []
    if len(name) > 253:
        errors.append(FieldError("FieldValueInvalid", "metadata.name", name, "must be no more than 253 characters"))
    if not _DNS1123_SUBDOMAIN.match(name):
        errors.append(FieldError(
            "FieldValueInvalid", "metadata.name", name,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must "
            "start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
            "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"))
    return errors


def lease_errors(obj: dict) -> list[FieldError]:
    """ValidateLeaseSpec's checks beyond the types."""
    spec = obj.get("spec") or {}
    errors = []
    duration = spec.get("leaseDurationSeconds")
    if isinstance(duration, (int, float)) and not isinstance(duration, bool) and duration <= 0:
        errors.append(FieldError("FieldValueInvalid", "spec.leaseDurationSeconds", duration, "must be greater than 0"))
    transitions = spec.get("leaseTransitions")
    if isinstance(transitions, (int, float)) and not isinstance(transitions, bool) and transitions < 0:
        errors.append(FieldError("FieldValueInvalid", "spec.leaseTransitions", transitions,
                                 "must be greater than or equal to 0"))
    return errors


def micro_time(value: str) -> str:
    """A metav1.MicroTime as the server writes it back: UTC, six fractional digits."""
    parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


# -------------------------------------------------------------------- patches


class PatchError(Exception):
    def __init__(self, message: str, code: int = 422):
        super().__init__(message)
        self.code = code


def merge_patch(target, patch):
    """RFC 7386 JSON merge patch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _pointer(path) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise PatchError(f"invalid JSON pointer {path!r}", 400)
    return [token.replace("~1", "/").replace("~0", "~") for token in path.split("/")[1:]] if path else []


def _resolve(document, tokens: list[str], operation: str, path: str):
    node = document
    for token in tokens:
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            raise PatchError(f"{operation} operation does not apply: doc is missing path: \"{path}\": missing value")
    return node


def _index(container: list, token: str, operation: str, path: str, insert: bool) -> int:
    if token == "-" and insert:
        return len(container)
    if not token.isdigit() or int(token) > len(container) - (0 if insert else 1):
        raise PatchError(f"{operation} operation does not apply: doc is missing path: \"{path}\": missing value")
    return int(token)


def _add(document, path: str, value, operation: str = "add"):
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _resolve(document, tokens[:-1], operation, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, operation, path, True), value)
    else:
        raise PatchError(f"{operation} operation does not apply: doc is missing path: \"{path}\": missing value")
    return document


def _remove(document, path: str, operation: str = "remove"):
    tokens = _pointer(path)
    if not tokens:
        raise PatchError(f"{operation} operation does not apply: cannot remove the whole document")
    parent = _resolve(document, tokens[:-1], operation, path)
    last = tokens[-1]
    if isinstance(parent, dict) and last in parent:
        return parent.pop(last)
    if isinstance(parent, list):
        return parent.pop(_index(parent, last, operation, path, False))
    raise PatchError(f"{operation} operation does not apply: doc is missing key: {path}: missing value")


def json_patch(document, operations):
    """RFC 6902 JSON patch: add, remove, replace, move, copy, test."""
    if not isinstance(operations, list):
        raise PatchError("json: cannot unmarshal object into Go value of type jsonpatch.Patch", 400)
    document = copy.deepcopy(document)
    for operation in operations:
        if not isinstance(operation, dict):
            raise PatchError("invalid JSON patch operation", 400)
        op, path = operation.get("op"), operation.get("path")
        if op == "add":
            document = _add(document, path, copy.deepcopy(operation.get("value")))
        elif op == "remove":
            _remove(document, path)
        elif op == "replace":
            _resolve(document, _pointer(path), "replace", path)
            if _pointer(path):
                _remove(document, path, "replace")
            document = _add(document, path, copy.deepcopy(operation.get("value")), "replace")
        elif op == "move":
            value = _remove(document, operation.get("from"), "move")
            document = _add(document, path, value, "move")
        elif op == "copy":
            value = copy.deepcopy(_resolve(document, _pointer(operation.get("from")), "copy", operation.get("from")))
            document = _add(document, path, value, "copy")
        elif op == "test":
            if _resolve(document, _pointer(path), "test", path) != operation.get("value"):
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {op}", 400)
    return document


# -------------------------------------------------------------------- watches


class Watcher:
    """One open watch: the handler thread drains its queue onto the connection."""

    def __init__(self, path: str, namespace: str | None, label_selector, field_selector, bookmarks: bool,
                 resource: Resource | None = None, version: str = "v1"):
        self.path = path  # the store's key
        self.namespace = namespace
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.bookmarks = bookmarks
        self.resource = resource
        self.version = version
        self.events: queue.Queue = queue.Queue()

    def wants(self, obj: dict) -> bool:
        if self.namespace and (obj.get("metadata") or {}).get("namespace") != self.namespace:
            return False
        return selector_matches(obj, self.label_selector, self.field_selector)

    def present(self, obj: dict) -> dict:
        return present(self.resource, self.version, obj)


def present(resource: Resource | None, version: str, obj: dict, list_item: bool = False) -> dict:
    """A stored object as answered for ``version``: a custom resource carries the version asked for;
    the items of a built-in kind's list carry no kind or apiVersion."""
    out = copy.deepcopy(obj)
    if resource is not None and resource.custom:
        out["apiVersion"] = resource.api_version(version)
        out["kind"] = resource.kind
    elif list_item:
        out.pop("kind", None)
        out.pop("apiVersion", None)
    return out


class APIServer:
    """The server's state and its two listeners (API over HTTPS, control over plain HTTP)."""

    def __init__(self, directory: str, port: int = 0, control_port: int = 0, token: str = "e2e-token",
                 history_limit: int = 100000, bookmark_interval: float = 20.0, host: str = "127.0.0.1",
                 crd_directory: str | None = None):
        self.directory = os.path.abspath(directory)
        os.makedirs(self.directory, exist_ok=True)
        self.host = host
        self.port = port
        self.control_port = control_port
        self.token = token
        self.history_limit = history_limit
        self.bookmark_interval = bookmark_interval
        self.crd_directory = crd_directory or os.environ.get("GATEWAY_API_CRDS") or DEFAULT_CRD_DIRECTORY
        self.lock = threading.RLock()
        self.resource_version = 1000
        self.registry = Registry()
        self.discovery = Discovery(self)
        self.endpoint = ResourceEndpoint(self)
        self.objects: dict[str, dict[str, dict]] = {}
        self.history: dict[str, list[tuple[int, str, dict]]] = {}
        self.compacted_through: dict[str, int] = {}
        for resource in self.registry.stored():
            self._open_store(resource.key)
        self.watchers: set[Watcher] = set()
        self.connections: set[socket.socket] = set()
        self.recorded_events: list[dict] = []
        self.requests: list[dict] = []
        self.write_log: list[dict] = []
        self.gone_pending: dict[str, str] = {}  # store key → "http" | "error"
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

    # ---------------------------------------------------------------- the store

    def _open_store(self, key: str) -> None:
        self.objects.setdefault(key, {})
        self.history.setdefault(key, [])
        self.compacted_through.setdefault(key, 0)

    def _next_uid(self) -> str:
        self.uid_counter += 1
        return f"e2e00000-0000-4000-8000-{self.uid_counter:012d}"

    def _commit(self, resource: Resource, event_type: str, obj: dict) -> dict:
        """Stores (or, for DELETED, removes) ``obj`` at a new resource version and tells the watchers.
        The caller holds the lock."""
        self.resource_version += 1
        obj.setdefault("metadata", {})["resourceVersion"] = str(self.resource_version)
        store = self.objects[resource.key]
        if event_type == "DELETED":
            store.pop(object_key(obj), None)
        else:
            store[object_key(obj)] = obj
        self._record(resource.key, event_type, obj)
        return obj

    def put(self, obj: dict) -> dict:
        """Creates or replaces an object (by kind, namespace, name): ADDED or MODIFIED to the watchers.
        No validation; a custom resource is stored at its storage version and its generation follows
        the spec rule."""
        resource = self.registry.by_kind(obj.get("kind"))
        if resource is None or resource.key == CRD_KEY:
            raise ValueError(f"unknown kind {obj.get('kind')!r}")
        with self.lock:
            stored = copy.deepcopy(obj)
            key = object_key(stored)
            existing = self.objects[resource.key].get(key)
            metadata = stored.setdefault("metadata", {})
            if existing is not None:
                metadata["uid"] = existing["metadata"]["uid"]
                metadata["creationTimestamp"] = existing["metadata"].get("creationTimestamp", now_rfc3339())
            else:
                metadata.setdefault("uid", self._next_uid())
                metadata.setdefault("creationTimestamp", now_rfc3339())
            if resource.custom:
                stored["apiVersion"] = resource.api_version(resource.storage_version)
                if existing is None:
                    metadata["generation"] = 1
                else:
                    generation = existing["metadata"].get("generation", 1)
                    changed = spec_changed(existing, stored, resource.has_status(resource.storage_version))
                    metadata["generation"] = generation + (1 if changed else 0)
            elif resource.generation == "legacy":
                metadata.setdefault("generation", 1)
            self._commit(resource, "MODIFIED" if existing is not None else "ADDED", stored)
            return copy.deepcopy(stored)

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        """Deletes an object: a DELETED event with its last state at a new resource version."""
        resource = self.registry.by_kind(kind)
        if resource is None or resource.key == CRD_KEY:
            raise ValueError(f"unknown kind {kind!r}")
        key = f"{namespace}/{name}" if namespace and namespace != "_" else name
        with self.lock:
            obj = self.objects[resource.key].get(key)
            if obj is None:
                return False
            self._commit(resource, "DELETED", obj)
            return True

    def get(self, kind: str, namespace: str | None, name: str) -> dict | None:
        resource = self.registry.by_kind(kind)
        if resource is None:
            raise KeyError(kind)
        key = f"{namespace}/{name}" if namespace and namespace != "_" else name
        with self.lock:
            obj = self.objects[resource.key].get(key)
            return copy.deepcopy(obj) if obj else None

    def _record(self, path: str, event_type: str, obj: dict) -> None:
        history = self.history[path]
        history.append((self.resource_version, event_type, copy.deepcopy(obj)))
        if len(history) > self.history_limit:
            dropped = history[: len(history) - self.history_limit]
            del history[: len(dropped)]
            self.compacted_through[path] = dropped[-1][0]
        for watcher in list(self.watchers):
            if watcher.path == path and watcher.wants(obj):
                watcher.events.put({"type": event_type, "object": watcher.present(obj)})

    def _end_watches(self, key: str, versions: set[str] | None = None) -> None:
        """Ends (cleanly) the open watches of a store, or only those of some versions."""
        for watcher in list(self.watchers):
            if watcher.path == key and (versions is None or watcher.version in versions):
                watcher.events.put(None)

    # ---------------------------------------------------------------- CRDs

    def read_crds(self, channel: str, directory: str | None = None) -> list[dict]:
        """The CustomResourceDefinitions of ``DIR/CHANNEL/*.yaml``."""
        if channel not in CRD_CHANNELS:
            raise ValueError(f"channel must be one of {', '.join(CRD_CHANNELS)}, not {channel!r}")
        folder = os.path.join(directory or self.crd_directory, channel)
        paths = sorted(glob.glob(os.path.join(folder, "*.yaml")) + glob.glob(os.path.join(folder, "*.yml")))
        if not paths:
            raise ValueError(f"no CRD files in {folder}")
        crds = []
        for path in paths:
            stat = os.stat(path)
            cache_key = (os.path.abspath(path), stat.st_mtime_ns, stat.st_size)
            if cache_key not in _CRD_CACHE:  # parsed once per file version: installs are frequent in tests
                with open(path) as file:
                    _CRD_CACHE[cache_key] = [d for d in load_yaml_documents(file.read())
                                             if isinstance(d, dict) and d.get("kind") == "CustomResourceDefinition"]
            crds.extend(copy.deepcopy(_CRD_CACHE[cache_key]))
        return crds

    def install_crds(self, channel: str | None = None, directory: str | None = None,
                     crds: list[dict] | None = None) -> dict:
        """Installs a channel's CRDs (or the given CRD objects), replacing the installed ones."""
        if crds is None:
            crds = self.read_crds(channel or "standard", directory)
        resources = {crd["metadata"]["name"]: Resource.from_crd(crd) for crd in crds}
        with self.lock:
            for name in [n for n in self.registry.custom if n not in resources]:
                self._remove_crd(name)
            crd_resource = self.registry.by_key(CRD_KEY)
            for name, resource in resources.items():
                previous = self.registry.custom.get(name)
                if previous is not None:
                    served = set(resource.served_versions())
                    self._end_watches(resource.key, {v for v in previous.served_versions() if v not in served})
                self.registry.custom[name] = resource
                self._open_store(resource.key)
                existing = self.objects[CRD_KEY].get(name)
                stored = self._crd_object(resource.crd, existing)
                self._commit(crd_resource, "MODIFIED" if existing is not None else "ADDED", stored)
            self.registry.channel = channel if channel else "custom"
            return self.crds()

    def remove_crds(self) -> dict:
        """Removes every installed CRD: its objects are deleted (DELETED events) and its watches end."""
        with self.lock:
            for name in list(self.registry.custom):
                self._remove_crd(name)
            self.registry.channel = None
            return self.crds()

    def _remove_crd(self, name: str) -> None:
        resource = self.registry.custom[name]
        for obj in list(self.objects.get(resource.key, {}).values()):
            self._commit(resource, "DELETED", obj)
        self._end_watches(resource.key)
        del self.registry.custom[name]
        for table in (self.objects, self.history, self.compacted_through):
            table.pop(resource.key, None)
        self.gone_pending.pop(resource.key, None)
        crd = self.objects[CRD_KEY].get(name)
        if crd is not None:
            self._commit(self.registry.by_key(CRD_KEY), "DELETED", crd)

    def _crd_object(self, crd: dict, existing: dict | None) -> dict:
        stored = copy.deepcopy(crd)
        stored["apiVersion"] = "apiextensions.k8s.io/v1"
        metadata = stored.setdefault("metadata", {})
        metadata["uid"] = existing["metadata"]["uid"] if existing else self._next_uid()
        metadata["creationTimestamp"] = existing["metadata"]["creationTimestamp"] if existing else now_rfc3339()
        metadata["generation"] = (existing["metadata"].get("generation", 1) + 1) if existing else 1
        names = dict(crd["spec"]["names"])
        names.setdefault("singular", names["kind"].lower())
        names.setdefault("listKind", names["kind"] + "List")
        now = now_rfc3339()
        stored["status"] = {
            "acceptedNames": names,
            "storedVersions": [v["name"] for v in crd["spec"]["versions"] if v.get("storage")],
            "conditions": [
                {"type": "NamesAccepted", "status": "True", "lastTransitionTime": now, "reason": "NoConflicts",
                 "message": "no conflicts found"},
                {"type": "Established", "status": "True", "lastTransitionTime": now, "reason": "InitialNamesAccepted",
                 "message": "the initial names have been accepted"}]}
        return stored

    def crds(self) -> dict:
        with self.lock:
            return {"channel": self.registry.channel, "resources": {
                name: {"kind": r.kind, "group": r.group, "plural": r.plural, "served": r.served_versions(),
                       "storage": r.storage_version, "status": [v for v in r.served_versions() if r.has_status(v)]}
                for name, r in sorted(self.registry.custom.items())}}

    def writes(self, since: float = 0.0, **filters) -> list[dict]:
        """The writes made through the API, oldest first (see the module docstring for the fields)."""
        with self.lock:
            return [copy.deepcopy(w) for w in self.write_log if w["time"] >= since
                    and all(value is None or w.get(field) == value for field, value in filters.items())]

    # ---------------------------------------------------------------- failures

    def gone_next_watch(self, mode: str = "error") -> None:
        """Answers the next watch of every collection with 410 Gone (``http``: HTTP 410; ``error``:
        200 with an ERROR Status event), ends every open watch with an ERROR 410 event now, and forgets
        the history, so a watch from any resource version seen so far is gone too."""
        with self.lock:
            for path in self.history:
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
                if watcher.bookmarks and watcher.resource is not None:
                    watcher.events.put({"type": "BOOKMARK", "object": {
                        "kind": watcher.resource.kind,
                        "apiVersion": watcher.resource.api_version(watcher.version),
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
        try:
            if method == "GET":
                with self.lock:
                    document = self.discovery.document(path)
                if document is not None:
                    handler.send_json(200, document)
                    return
            target = parse_resource_path(path)
            if target is None:
                raise APIError(404, "NotFound", NOT_FOUND_PATH, {})
            group, version, namespace, plural, name, subresource = target
            if plural == "events" and group in ("", "events.k8s.io") and version == "v1" and method == "POST" \
                    and namespace and name is None:
                self._create_event(handler, namespace, body)
                return
            with self.lock:
                resource = self.registry.lookup(group, version, plural)
            if resource is None or resource.discovery_only or (namespace is not None and not resource.namespaced):
                raise APIError(404, "NotFound", NOT_FOUND_PATH, {})
            request = Request(handler, method, path, query, body, resource, version, namespace, name, subresource)
            self.endpoint.serve(request)
        except APIError as error:
            handler.send_json(error.code, error.status)

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

    def serve_list(self, handler: "_APIHandler", path: str, namespace: str | None, query: dict,
              resource: Resource | None = None, version: str = "v1") -> None:
        kind = resource.kind if resource else "Unknown"
        api_version = resource.api_version(version) if resource else version
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
            # Items of a typed (built-in) list carry no kind or apiVersion; a custom resource's do.
            items = [present(resource, version, obj, list_item=True) for _, obj in selected]
        handler.send_json(200, {"kind": kind + "List", "apiVersion": api_version, "metadata": metadata, "items": items},
                          headers=self.endpoint.version_warnings(resource, version) if resource else None)

    def serve_watch(self, handler: "_APIHandler", path: str, namespace: str | None, query: dict,
               resource: Resource | None = None, version: str = "v1") -> None:
        from_version = query.get("resourceVersion") or ""
        watcher = Watcher(path, namespace, query.get("labelSelector"), query.get("fieldSelector"),
                          query.get("allowWatchBookmarks") == "true", resource, version)
        gone_message = None
        with self.lock:
            gone_mode = self.gone_pending.pop(path, None)
            if from_version not in ("", "0"):
                try:
                    version_number = int(from_version)
                except ValueError:
                    handler.send_json(400, status_object(400, "BadRequest", f"invalid resourceVersion {from_version}"))
                    return
                if version_number < self.compacted_through[path] or gone_mode:
                    gone_mode = gone_mode or "http"
                    gone_message = f"too old resource version: {version_number} ({self.compacted_through[path]})"
            elif gone_mode:
                gone_message = "too old resource version: 0"
            if gone_message is None:
                if from_version in ("", "0"):
                    for obj in self.objects[path].values():
                        if watcher.wants(obj):
                            watcher.events.put({"type": "ADDED", "object": watcher.present(obj)})
                else:
                    for number, event_type, obj in self.history[path]:
                        if number > int(from_version) and watcher.wants(obj):
                            watcher.events.put({"type": event_type, "object": watcher.present(obj)})
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
            handler.start_chunked(200, self.endpoint.version_warnings(resource, version) if resource else None)
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
                    handler.send_json(200, {p: list(o.values()) for p, o in self.objects.items() if p != CRD_KEY})
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
            elif method == "POST" and path == "/crds":
                crds = json.loads(body) if body.strip() else None
                if isinstance(crds, dict):
                    crds = crds.get("items") if crds.get("kind", "").endswith("List") else [crds]
                handler.send_json(200, self.install_crds(query.get("channel"), query.get("dir"), crds))
            elif method == "DELETE" and path == "/crds":
                handler.send_json(200, self.remove_crds())
            elif method == "GET" and path == "/crds":
                handler.send_json(200, self.crds())
            elif method == "GET" and path == "/writes":
                fields = ("resource", "subresource", "namespace", "name", "verb")
                filters = {field: query.get(field) for field in fields}
                handler.send_json(200, self.writes(float(query.get("since") or 0), **filters))
            elif method == "GET" and path == "/events":
                handler.send_json(200, self.events())
            elif method == "GET" and path == "/requests":
                with self.lock:
                    handler.send_json(200, list(self.requests))
            elif method == "GET" and path == "/watches":
                with self.lock:
                    handler.send_json(200, [{"path": w.path, "version": w.version, "fieldSelector": w.field_selector}
                                            for w in self.watchers])
            else:
                handler.send_json(404, {"error": f"no control endpoint {method} {path}"})
        except (ValueError, KeyError, OSError) as error:
            handler.send_json(400, {"error": str(error)})


def spec_changed(old: dict, new: dict, status_subresource: bool = True) -> bool:
    """Whether anything but metadata (and status, when it is a subresource) differs: a new generation."""
    ignored = ("metadata", "apiVersion", "kind") + (("status",) if status_subresource else ())
    return {k: v for k, v in old.items() if k not in ignored} != {k: v for k, v in new.items() if k not in ignored}


def parse_resource_path(path: str):
    """``/api/v1[/namespaces/NS]/RESOURCE[/NAME[/SUBRESOURCE]]`` or the same under
    ``/apis/GROUP/VERSION``: (group, version, namespace, resource, name, subresource), or None."""
    parts = [urllib.parse.unquote(p) for p in path.split("/") if p]
    if parts[:2] == ["api", "v1"]:
        group, version, rest = "", "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    return (group, version, namespace, rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None)


# -------------------------------------------------------------------- the object endpoints


class Request:
    """One API request on a resource, once routed."""

    def __init__(self, handler, method: str, path: str, query: dict, body: bytes, resource: Resource,
                 version: str, namespace: str | None, name: str | None, subresource: str | None):
        self.handler = handler
        self.method = method
        self.path = path
        self.query = query
        self.body = body
        self.resource = resource
        self.version = version
        self.namespace = namespace
        self.name = name
        self.subresource = subresource
        self.warnings: list[str] = []

    @property
    def dry_run(self) -> bool:
        return self.query.get("dryRun") == "All"

    @property
    def store_key(self) -> str:
        return f"{self.namespace}/{self.name}" if self.resource.namespaced else self.name

    def json_body(self):
        try:
            return json.loads(self.body or b"null")
        except ValueError as error:
            raise bad_request(f"the body of the request is not valid JSON: {error}") from None

    def body_for_log(self):
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return self.body.decode(errors="replace")


class ResourceEndpoint:
    """GET, list, watch, POST, PUT, PATCH, DELETE of the objects of one resource, with the semantics of
    kube-apiserver's generic registry and custom resource handler."""

    def __init__(self, api: APIServer):
        self.api = api

    # ---------------------------------------------------------------- dispatch

    def serve(self, request: Request) -> None:
        resource, method = request.resource, request.method
        if request.subresource is not None and (request.subresource != "status"
                                                or not resource.has_status(request.version)
                                                or request.name is None):
            raise APIError(404, "NotFound", NOT_FOUND_PATH, {})
        if request.name is not None and resource.namespaced and request.namespace is None:
            raise APIError(404, "NotFound", NOT_FOUND_PATH, {})
        if method == "GET" and request.name is None:
            serve = self.api.serve_watch if request.query.get("watch") in ("true", "1") else self.api.serve_list
            serve(request.handler, resource.key, request.namespace, request.query, resource, request.version)
            return
        if method == "GET":
            self.get(request)
            return
        if not resource.writable:
            raise method_not_allowed()
        if method == "POST" and request.name is None:
            if resource.namespaced and request.namespace is None:
                raise method_not_allowed()
            self.write(request, "create", self.create)
        elif method == "PUT" and request.name is not None:
            self.write(request, "update", self.update)
        elif method == "PATCH" and request.name is not None:
            self.write(request, "patch", self.patch)
        elif method == "DELETE" and request.name is not None:
            self.write(request, "delete", self.delete)
        elif method == "DELETE":
            self.write(request, "deletecollection", self.delete_collection)
        else:
            raise method_not_allowed()

    def version_warnings(self, resource: Resource, version: str) -> list[tuple[str, str]]:
        entry = resource.versions.get(version)
        if entry is None or not entry.deprecated:
            return []
        text = entry.deprecation_warning or (f"{resource.api_version(version)} {resource.kind} is deprecated")
        return [("Warning", warning_value(text))]

    def respond(self, request: Request, code: int, payload) -> None:
        headers = self.version_warnings(request.resource, request.version)
        headers += [("Warning", warning_value(text)) for text in request.warnings]
        request.handler.send_json(code, payload, headers=headers)

    def write(self, request: Request, verb: str, action) -> None:
        """Runs a write and logs it (answered or refused) for ``GET /writes``."""
        entry = {"verb": verb, "method": request.method, "path": request.path, "group": request.resource.group,
                 "version": request.version, "resource": request.resource.plural, "kind": request.resource.kind,
                 "namespace": request.namespace, "name": request.name, "subresource": request.subresource or "",
                 "dryRun": request.dry_run, "body": request.body_for_log()}
        try:
            code, payload, noop = action(request)
        except APIError as error:
            code, payload, noop = error.code, error.status, False
        metadata = payload.get("metadata") or {} if isinstance(payload, dict) else {}
        entry.update({"time": time.time(), "code": code, "noop": noop,
                      "name": request.name or metadata.get("name"),
                      "resourceVersion": metadata.get("resourceVersion"), "generation": metadata.get("generation"),
                      "object": payload})
        with self.api.lock:
            self.api.write_log.append(entry)
            del self.api.write_log[:-20000]
        self.respond(request, code, payload)

    # ---------------------------------------------------------------- reads

    def get(self, request: Request) -> None:
        with self.api.lock:
            obj = self.api.objects[request.resource.key].get(request.store_key)
            if obj is None:
                raise not_found(request.resource, request.name)
            answer = present(request.resource, request.version, obj)
        self.respond(request, 200, answer)

    # ---------------------------------------------------------------- preparing a written object

    def decode(self, request: Request, obj) -> dict:
        """Checks the body's type fields against the URL and fills them in."""
        resource = request.resource
        if not isinstance(obj, dict):
            raise bad_request("the body of the request is not a JSON object")
        expected = resource.api_version(request.version)
        if resource.custom and not obj.get("kind"):
            raise bad_request(f"Object 'Kind' is missing in '{json.dumps(obj, separators=(',', ':'))}'")
        if obj.get("apiVersion") and obj["apiVersion"] != expected:
            raise bad_request(f"the API version in the data ({obj['apiVersion']}) does not match the expected "
                              f"API version ({expected})")
        if obj.get("kind") and obj["kind"] != resource.kind:
            raise bad_request(f"the kind in the data ({obj['kind']}) does not match the expected kind "
                              f"({resource.kind})")
        obj["apiVersion"], obj["kind"] = expected, resource.kind
        metadata = obj.get("metadata")
        if metadata is None:
            obj["metadata"] = metadata = {}
        if not isinstance(metadata, dict):
            raise bad_request("metadata must be an object")
        if resource.namespaced:
            if metadata.get("namespace") and metadata["namespace"] != request.namespace:
                raise bad_request("the namespace of the provided object does not match the namespace sent on the "
                                  "request")
            metadata["namespace"] = request.namespace
        else:
            metadata.pop("namespace", None)
        return obj

    def normalize(self, request: Request, obj: dict) -> dict:
        """Prunes unknown fields (warning, or 400 when strict), applies defaults, fixes Lease times."""
        schema = request.resource.schema(request.version)
        if schema:
            unknown: list[str] = []
            prune(obj, schema, "", unknown, root=True)
            mode = request.query.get("fieldValidation", "Warn")
            if unknown and mode == "Strict":
                raise bad_request("strict decoding error: "
                                  + ", ".join(f"unknown field {go_quote(u)}" for u in unknown))
            if mode != "Ignore":
                request.warnings.extend(f"unknown field {go_quote(u)}" for u in unknown)
            apply_defaults(obj, schema)
        if request.resource.key == LEASES_KEY:
            spec = obj.get("spec")
            for field in ("acquireTime", "renewTime"):
                if isinstance(spec, dict) and isinstance(spec.get(field), str):
                    try:
                        spec[field] = micro_time(spec[field])
                    except ValueError:
                        raise bad_request(f'Lease in version "v1" cannot be handled as a Lease: parsing time '
                                          f'{go_quote(spec[field])} as "2006-01-02T15:04:05.000000Z07:00": '
                                          "cannot parse") from None
        return obj

    def check(self, request: Request, obj: dict, fields: tuple[str, ...] | None, new_name: bool = False) -> None:
        """Validates ``obj`` (its ``fields``): 422 Invalid (400 for a built-in kind's wrong types)."""
        resource = request.resource
        errors = name_errors(obj["metadata"]) if new_name else []
        found = schema_errors(obj, resource.schema(request.version), fields)
        if not resource.custom:
            wrong_types = [e for e in found if e.type == "FieldValueTypeInvalid"]
            if wrong_types:
                raise bad_request(f'{resource.kind} in version "{request.version}" cannot be handled as a '
                                  f'{resource.kind}: {wrong_types[0].detail}')
        errors += found
        if resource.key == LEASES_KEY:
            errors += lease_errors(obj)
        if errors:
            raise invalid(resource, obj["metadata"].get("name") or request.name or "", errors)

    # ---------------------------------------------------------------- writes

    def create(self, request: Request, obj: dict | None = None):
        resource = request.resource
        obj = self.decode(request, request.json_body() if obj is None else obj)
        metadata = obj["metadata"]
        if metadata.get("resourceVersion"):
            raise APIError(500, "InternalError", "Internal error occurred: resourceVersion should not be set on "
                           "objects to be created", {"causes": [{"message": "resourceVersion should not be set on "
                                                                 "objects to be created"}]})
        if not metadata.get("name") and metadata.get("generateName"):
            metadata["name"] = metadata["generateName"] + "".join(random.choices("bcdfghjklmnpqrstvwxz2456789", k=5))
        self.normalize(request, obj)
        if resource.has_status(request.version):
            obj.pop("status", None)
        if resource.key == LEASES_KEY and isinstance(obj.get("spec"), dict):
            for field in LEASE_GATED_FIELDS:
                obj["spec"].pop(field, None)
        for field in ("uid", "generation", "deletionTimestamp", "deletionGracePeriodSeconds", "managedFields",
                      "selfLink"):
            metadata.pop(field, None)
        self.check(request, obj, None, new_name=True)
        request.name = metadata["name"]
        with self.api.lock:
            if request.store_key in self.api.objects[resource.key]:
                raise already_exists(resource, metadata["name"])
            metadata["uid"] = self.api._next_uid()
            metadata["creationTimestamp"] = now_rfc3339()
            if resource.generation == "spec":
                metadata["generation"] = 1
            stored = copy.deepcopy(obj)
            stored["apiVersion"] = resource.api_version(resource.storage_version)
            if request.dry_run:
                return 201, present(resource, request.version, stored), False
            self.api._commit(resource, "ADDED", stored)
            return 201, present(resource, request.version, stored), False

    def update(self, request: Request, obj: dict | None = None):
        """PUT of the resource or of its status; ``obj`` is a patched object in place of the body."""
        resource = request.resource
        obj = self.decode(request, request.json_body() if obj is None else obj)
        metadata = obj["metadata"]
        if metadata.get("name") != request.name:
            raise bad_request(f"the name of the object ({metadata.get('name', '')}) does not match the name on the "
                              f"URL ({request.name})")
        self.normalize(request, obj)
        with self.api.lock:
            existing = self.api.objects[resource.key].get(request.store_key)
            if existing is None:
                if resource.create_on_update and request.subresource is None:
                    metadata.pop("resourceVersion", None)
                    return self.create(request, obj)
                raise not_found(resource, request.name)
            given = metadata.get("resourceVersion")
            if not given:
                raise invalid(resource, request.name, [FieldError("FieldValueInvalid", "metadata.resourceVersion", 0,
                                                                  "must be specified for an update")])
            if given != existing["metadata"]["resourceVersion"]:
                raise conflict(resource, request.name)
            if request.subresource == "status":
                new = copy.deepcopy(existing)
                if "status" in obj:
                    new["status"] = obj["status"]
                else:
                    new.pop("status", None)
                new["apiVersion"] = obj["apiVersion"]
                fields = ("status",)
            else:
                new = obj
                for field in ("uid", "creationTimestamp", "generation", "deletionTimestamp",
                              "deletionGracePeriodSeconds"):
                    if field in existing["metadata"]:
                        metadata[field] = existing["metadata"][field]
                    else:
                        metadata.pop(field, None)
                metadata.pop("managedFields", None)
                if resource.has_status(request.version):
                    if "status" in existing:
                        new["status"] = copy.deepcopy(existing["status"])
                    else:
                        new.pop("status", None)
                    fields = tuple(k for k in new if k != "status")
                else:
                    fields = None
                if resource.key == LEASES_KEY and isinstance(new.get("spec"), dict):
                    for field in LEASE_GATED_FIELDS:
                        if field not in (existing.get("spec") or {}):
                            new["spec"].pop(field, None)
                if resource.generation == "spec" and spec_changed(existing, new, resource.has_status(request.version)):
                    metadata["generation"] = existing["metadata"].get("generation", 1) + 1
            self.check(request, new, fields)
            return self._store_update(request, existing, new)

    def _store_update(self, request: Request, existing: dict, new: dict):
        """Stores an update unless it changes nothing; a deleting object whose finalizers are gone goes."""
        resource = request.resource
        new = copy.deepcopy(new)
        new["apiVersion"] = resource.api_version(resource.storage_version)
        new["metadata"]["resourceVersion"] = existing["metadata"]["resourceVersion"]
        if new == existing:
            return 200, present(resource, request.version, existing), True
        if request.dry_run:
            return 200, present(resource, request.version, new), False
        if new["metadata"].get("deletionTimestamp") and not new["metadata"].get("finalizers"):
            self.api._commit(resource, "DELETED", new)
        else:
            self.api._commit(resource, "MODIFIED", new)
        return 200, present(resource, request.version, new), False

    PATCH_TYPES = ("application/json-patch+json", "application/merge-patch+json")

    def patch(self, request: Request):
        resource = request.resource
        content_type = (request.handler.headers.get("Content-Type") or "").split(";")[0].strip()
        accepted = list(self.PATCH_TYPES) + ([] if resource.custom else ["application/strategic-merge-patch+json"])
        if content_type not in accepted:
            raise APIError(415, "UnsupportedMediaType",
                           f"the body of the request was in an unknown format - accepted media types include: "
                           f"{', '.join(accepted + ['application/apply-patch+yaml'])}"
                           + (" (server-side apply is not implemented by this stand-in)"
                              if content_type == "application/apply-patch+yaml" else ""), {})
        patch_document = request.json_body()
        with self.api.lock:
            existing = self.api.objects[resource.key].get(request.store_key)
            if existing is None:
                raise not_found(resource, request.name)
            current = present(resource, request.version, existing)
            current.setdefault("apiVersion", resource.api_version(request.version))
            current.setdefault("kind", resource.kind)
            try:
                if content_type == "application/json-patch+json":
                    patched = json_patch(current, patch_document)
                else:
                    if not isinstance(patch_document, dict):
                        raise PatchError("the patch is not a JSON object", 400)
                    patched = merge_patch(current, patch_document)
            except PatchError as error:
                if error.code == 400:
                    raise bad_request(str(error)) from None
                raise APIError(422, "Invalid", str(error), {}) from None
            if not isinstance(patched, dict):
                raise bad_request("the patched object is not a JSON object")
            metadata = patched.setdefault("metadata", {})
            if not metadata.get("resourceVersion"):
                metadata["resourceVersion"] = existing["metadata"]["resourceVersion"]
            return self.update(request, patched)

    def delete(self, request: Request):
        resource = request.resource
        options = request.json_body() or {}
        preconditions = (options.get("preconditions") or {}) if isinstance(options, dict) else {}
        dry_run = request.dry_run or (isinstance(options, dict) and options.get("dryRun") == ["All"])
        with self.api.lock:
            existing = self.api.objects[resource.key].get(request.store_key)
            if existing is None:
                raise not_found(resource, request.name)
            return self._delete_one(request, existing, preconditions, dry_run)

    def _delete_one(self, request: Request, existing: dict, preconditions: dict, dry_run: bool):
        resource = request.resource
        metadata = existing["metadata"]
        if preconditions.get("uid") and preconditions["uid"] != metadata.get("uid"):
            raise conflict(resource, metadata["name"],
                           f"Precondition failed: UID in precondition: {preconditions['uid']}, "
                           f"UID in object meta: {metadata.get('uid')}")
        if preconditions.get("resourceVersion") and preconditions["resourceVersion"] != metadata.get("resourceVersion"):
            raise conflict(resource, metadata["name"],
                           f"Precondition failed: ResourceVersion in precondition: {preconditions['resourceVersion']}, "
                           f"ResourceVersion in object meta: {metadata.get('resourceVersion')}")
        if metadata.get("finalizers"):
            if metadata.get("deletionTimestamp"):
                return 200, present(resource, request.version, existing), True
            deleting = copy.deepcopy(existing)
            deleting["metadata"]["deletionTimestamp"] = now_rfc3339()
            deleting["metadata"]["deletionGracePeriodSeconds"] = 0
            if deleting["metadata"].get("generation"):
                deleting["metadata"]["generation"] += 1
            if not dry_run:
                self.api._commit(resource, "MODIFIED", deleting)
            return 200, present(resource, request.version, deleting), False
        gone = copy.deepcopy(existing)
        if not dry_run:
            self.api._commit(resource, "DELETED", gone)
        if resource.custom:
            return 200, present(resource, request.version, gone), False
        return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                     "details": {**_details(resource, metadata["name"]), "uid": metadata.get("uid")}}, False

    def delete_collection(self, request: Request):
        resource = request.resource
        items = []
        with self.api.lock:
            for obj in list(self.api.objects[resource.key].values()):
                if request.namespace and obj["metadata"].get("namespace") != request.namespace:
                    continue
                if not selector_matches(obj, request.query.get("labelSelector"), request.query.get("fieldSelector")):
                    continue
                _, answer, _ = self._delete_one(request, obj, {}, request.dry_run)
                if answer.get("kind") == "Status":
                    answer = present(resource, request.version, obj, list_item=True)
                items.append(answer)
            metadata = {"resourceVersion": str(self.api.resource_version)}
        return 200, {"kind": resource.list_kind, "apiVersion": resource.api_version(request.version),
                     "metadata": metadata, "items": items}, False


def warning_value(text: str) -> str:
    """A ``Warning`` header value as the API server writes it (RFC 7234 code 299)."""
    return '299 - "' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'


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

    def send_json(self, code: int, payload, headers: list[tuple[str, str]] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers or ():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def start_chunked(self, code: int, headers: list[tuple[str, str]] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in headers or ():
            self.send_header(name, value)
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


def install_crds(channel: str = "standard", directory: str | None = None) -> dict:
    """Installs a Gateway API channel's CRDs on the module's server (see :meth:`APIServer.install_crds`)."""
    if server is None:
        raise RuntimeError("apiserver.start() first")
    return server.install_crds(channel, directory)


def remove_crds() -> dict:
    if server is None:
        raise RuntimeError("apiserver.start() first")
    return server.remove_crds()


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

    def install_crds(self, channel: str = "standard", directory: str | None = None, crds: list | None = None) -> dict:
        query = {"channel": channel} if channel else {}
        if directory:
            query["dir"] = directory
        return self._call("POST", "/crds?" + urllib.parse.urlencode(query), crds)

    def remove_crds(self) -> dict:
        return self._call("DELETE", "/crds")

    def crds(self) -> dict:
        return self._call("GET", "/crds")

    def writes(self, since: float = 0.0, **filters) -> list:
        """Writes made through the API since ``since`` (filters: resource, subresource, namespace, name, verb)."""
        query = {"since": repr(since), **{k: v for k, v in filters.items() if v is not None}}
        return self._call("GET", "/writes?" + urllib.parse.urlencode(query))


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
    serve.add_argument("--crds", choices=CRD_CHANNELS, help="install this Gateway API channel's CRDs at start")
    serve.add_argument("--crd-dir", help=f"the CRD directory (CHANNEL/*.yaml; default $GATEWAY_API_CRDS or "
                                         f"{DEFAULT_CRD_DIRECTORY})")
    ctl = commands.add_parser("ctl", help="drive a running server")
    ctl.add_argument("--dir", required=True)
    ctl.add_argument("action", choices=["put", "delete", "gone", "down", "drop", "bookmark", "events",
                                        "requests", "objects", "health", "watches", "install-crds",
                                        "remove-crds", "crds", "writes"])
    ctl.add_argument("args", nargs="*")
    arguments = parser.parse_args(argv)

    if arguments.command == "serve":
        api = APIServer(arguments.dir, arguments.port, arguments.control_port, arguments.token,
                        bookmark_interval=arguments.bookmark_interval, host=arguments.host,
                        crd_directory=arguments.crd_dir).start()
        if arguments.crds:
            api.install_crds(arguments.crds)
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
    elif action == "install-crds":
        result = client.install_crds(args[0] if args else "standard", args[1] if len(args) > 1 else None)
    elif action == "remove-crds":
        result = client.remove_crds()
    elif action == "writes":
        result = client.writes(float(args[0]) if args else 0.0)
    else:
        result = getattr(client, action)()
    json.dump(result, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
