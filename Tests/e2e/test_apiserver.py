#!/usr/bin/env python3
"""Tests of the stand-in API server (apiserver.py): Gateway API CRDs installed at run time, discovery,
route and Lease writes with the real server's semantics (generation, status subresource, optimistic
concurrency, schema validation and defaults, patches), and the control API's write log.

Each test class starts its own server in this process on ephemeral ports and talks HTTPS with the
bearer token, as the agent does. Run: ``python3 -m unittest Tests/e2e/test_apiserver.py -v``.
"""

from __future__ import annotations

import glob
import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import apiserver  # noqa: E402

CRD_DIRECTORY = os.environ.get("GATEWAY_API_CRDS") or apiserver.DEFAULT_CRD_DIRECTORY
HAVE_CRDS = os.path.isdir(os.path.join(CRD_DIRECTORY, "standard"))
GROUP = "gateway.networking.k8s.io"
NS = "shop"
MERGE = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class Response:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes):
        self.status = status
        self.headers = headers
        self.raw = body
        try:
            self.json = json.loads(body) if body else None
        except ValueError:
            self.json = None

    def warnings(self) -> list[str]:
        return [value for name, value in self.headers if name.lower() == "warning"]

    def __repr__(self) -> str:
        return f"<{self.status} {self.raw[:400]!r}>"


class ServerCase(unittest.TestCase):
    """One server per test class."""

    server: apiserver.APIServer
    channel: str | None = None

    @classmethod
    def setUpClass(cls):
        cls.directory = tempfile.mkdtemp(prefix="test-apiserver.")
        cls.server = apiserver.APIServer(cls.directory, crd_directory=CRD_DIRECTORY, bookmark_interval=3600).start()
        cls.context = ssl.create_default_context(cafile=cls.server.ca_path)
        if cls.channel:
            cls.server.install_crds(cls.channel)

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()
        shutil.rmtree(cls.directory, ignore_errors=True)

    def request(self, method: str, path: str, body=None, content_type: str = "application/json",
                token: str = "e2e-token") -> Response:
        connection = http.client.HTTPSConnection("127.0.0.1", self.server.port, context=self.context, timeout=10)
        headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            headers["Content-Type"] = content_type
        try:
            connection.request(method, path, body=data, headers=headers)
            response = connection.getresponse()
            return Response(response.status, response.getheaders(), response.read())
        finally:
            connection.close()

    def ok(self, response: Response, status: int = 200) -> dict:
        self.assertEqual(response.status, status, response)
        return response.json

    def failure(self, response: Response, status: int, reason: str) -> dict:
        self.assertEqual(response.status, status, response)
        self.assertEqual(response.json["kind"], "Status")
        self.assertEqual(response.json["status"], "Failure")
        self.assertEqual(response.json["reason"], reason)
        self.assertEqual(response.json["code"], status)
        return response.json

    def watch(self, path: str) -> "WatchStream":
        return WatchStream(self, path)


class WatchStream:
    """A watch read on a thread: ``next_event()`` waits for the next newline-delimited event."""

    def __init__(self, case: ServerCase, path: str):
        self.connection = http.client.HTTPSConnection("127.0.0.1", case.server.port, context=case.context, timeout=10)
        self.connection.request("GET", path, headers={"Authorization": "Bearer e2e-token"})
        self.response = self.connection.getresponse()
        case.assertEqual(self.response.status, 200)
        self.events: list[dict] = []
        self.ended = threading.Event()
        self.arrived = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        try:
            while True:
                line = self.response.readline()
                if not line:
                    return
                with self.arrived:
                    self.events.append(json.loads(line))
                    self.arrived.notify_all()
        except (OSError, ValueError, AttributeError, http.client.HTTPException):
            return  # closed under the reader
        finally:
            self.ended.set()

    def next_event(self, index: int, timeout: float = 5.0) -> dict:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.events) > index, timeout)
            if len(self.events) <= index:
                raise AssertionError(f"no watch event #{index} within {timeout}s (have {self.events})")
            return self.events[index]

    def close(self):
        try:  # unblocks the reader first: closing the response waits for its lock
            self.connection.sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass
        self.connection.close()


def routes(version: str, kind: str = "tcproutes", namespace: str = NS) -> str:
    return f"/apis/{GROUP}/{version}/namespaces/{namespace}/{kind}"


def tcp_route(name: str, version: str = "v1", weights=(90, 10), labels: dict | None = None) -> dict:
    backend_refs = [{"name": f"backend-{index}", "port": 8080, "weight": weight}
                    for index, weight in enumerate(weights)]
    route = {"apiVersion": f"{GROUP}/{version}", "kind": "TCPRoute",
             "metadata": {"name": name, "namespace": NS},
             "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "shop", "port": 8080}],
                      "rules": [{"backendRefs": backend_refs}]}}
    if labels:
        route["metadata"]["labels"] = labels
    return route


def route_status(generation: int, controller: str = "canary-agent.io/node-agent") -> dict:
    return {"parents": [{
        "parentRef": {"group": "", "kind": "Service", "name": "shop", "port": 8080},
        "controllerName": controller,
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted", "message": "programmed",
                        "observedGeneration": generation, "lastTransitionTime": "2025-01-01T00:00:00Z"}]}]}


# -------------------------------------------------------------------- discovery and installation


@unittest.skipUnless(HAVE_CRDS, f"no Gateway API CRDs in {CRD_DIRECTORY}")
class DiscoveryTests(ServerCase):
    """Discovery before installation, per channel, and after removal (one server, in order)."""

    def assert_not_installed(self):
        groups = [g["name"] for g in self.ok(self.request("GET", "/apis"))["groups"]]
        self.assertNotIn(GROUP, groups)
        self.assertIn("coordination.k8s.io", groups)
        self.failure(self.request("GET", f"/apis/{GROUP}"), 404, "NotFound")
        self.failure(self.request("GET", f"/apis/{GROUP}/v1"), 404, "NotFound")
        self.failure(self.request("GET", routes("v1")), 404, "NotFound")
        self.failure(self.request("GET", routes("v1", "httproutes")), 404, "NotFound")
        self.failure(self.request("POST", routes("v1"), tcp_route("early")), 404, "NotFound")

    def resources(self, version: str) -> dict:
        listing = self.ok(self.request("GET", f"/apis/{GROUP}/{version}"))
        self.assertEqual(listing["kind"], "APIResourceList")
        self.assertEqual(listing["groupVersion"], f"{GROUP}/{version}")
        return {entry["name"]: entry for entry in listing["resources"]}

    def group(self) -> dict:
        group = self.ok(self.request("GET", f"/apis/{GROUP}"))
        self.assertEqual(group["kind"], "APIGroup")
        listed = next(g for g in self.ok(self.request("GET", "/apis"))["groups"] if g["name"] == GROUP)
        self.assertEqual(listed["versions"], group["versions"])
        self.assertEqual(listed["preferredVersion"], group["preferredVersion"])
        return group

    def test_1_before_install(self):
        self.assert_not_installed()
        leases = self.ok(self.request("GET", "/apis/coordination.k8s.io/v1"))
        self.assertEqual(leases["resources"], [{
            "name": "leases", "singularName": "lease", "namespaced": True, "kind": "Lease",
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
            "storageVersionHash": "gqkMMb/YqFM="}])
        core = self.ok(self.request("GET", "/api"))
        self.assertEqual(core["versions"], ["v1"])

    def test_2_standard_channel(self):
        summary = self.server.install_crds("standard")
        self.assertEqual(summary["channel"], "standard")
        group = self.group()
        self.assertEqual([v["version"] for v in group["versions"]], ["v1", "v1beta1"])
        self.assertEqual(group["preferredVersion"], {"groupVersion": f"{GROUP}/v1", "version": "v1"})
        v1 = self.resources("v1")
        self.assertEqual(sorted(v1), ["grpcroutes", "grpcroutes/status", "httproutes", "httproutes/status",
                                      "referencegrants", "tcproutes", "tcproutes/status", "udproutes",
                                      "udproutes/status"])
        self.assertEqual(v1["tcproutes"], {
            "name": "tcproutes", "singularName": "tcproute", "namespaced": True, "kind": "TCPRoute",
            "verbs": ["delete", "deletecollection", "get", "list", "patch", "create", "update", "watch"],
            "categories": ["gateway-api"],
            "storageVersionHash": apiserver.storage_version_hash(GROUP, "v1", "TCPRoute")})
        self.assertEqual(v1["tcproutes/status"], {"name": "tcproutes/status", "singularName": "", "namespaced": True,
                                                  "kind": "TCPRoute", "verbs": ["get", "patch", "update"]})
        self.assertEqual(v1["referencegrants"]["shortNames"], ["refgrant"])
        self.assertEqual(sorted(self.resources("v1beta1")), ["httproutes", "httproutes/status", "referencegrants"])
        # The standard channel's files do not serve v1alpha2 (TCPRoute and UDPRoute are v1 there).
        self.failure(self.request("GET", f"/apis/{GROUP}/v1alpha2"), 404, "NotFound")
        self.failure(self.request("GET", routes("v1alpha2")), 404, "NotFound")
        self.assertEqual(self.ok(self.request("GET", routes("v1")))["kind"], "TCPRouteList")
        crd = self.ok(self.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                                          f"tcproutes.{GROUP}"))
        self.assertEqual([c["type"] for c in crd["status"]["conditions"]], ["NamesAccepted", "Established"])

    def test_3_experimental_channel(self):
        self.server.install_crds("experimental")
        group = self.group()
        self.assertEqual([v["version"] for v in group["versions"]], ["v1", "v1beta1", "v1alpha2"])
        self.assertEqual(group["preferredVersion"]["version"], "v1")
        self.assertEqual(sorted(self.resources("v1alpha2")),
                         ["tcproutes", "tcproutes/status", "udproutes", "udproutes/status"])
        self.assertIn("grpcroutes", self.resources("v1"))
        # A deprecated version says so.
        answer = self.request("GET", routes("v1alpha2"))
        self.ok(answer)
        self.assertTrue(any("v1alpha2 version of TCPRoute has been deprecated" in w for w in answer.warnings()),
                        answer.headers)
        # Back to the standard channel: a watch of v1alpha2 (no longer served) ends, one of v1 goes on.
        old = self.watch(routes("v1alpha2") + "?watch=true&timeoutSeconds=20")
        kept = self.watch(routes("v1") + "?watch=true&timeoutSeconds=20")
        try:
            self.server.install_crds("standard")
            self.assertTrue(old.ended.wait(5), "the v1alpha2 watch did not end")
            self.assertFalse(kept.ended.wait(0.5), "the v1 watch ended")
        finally:
            old.close()
            kept.close()

    def test_4_removed(self):
        self.ok(self.request("POST", routes("v1"), tcp_route("doomed")), 201)
        watch = self.watch(routes("v1") + "?watch=true&timeoutSeconds=10")
        try:
            self.assertEqual(watch.next_event(0)["type"], "ADDED")
            self.assertEqual(self.server.remove_crds(), {"channel": None, "resources": {}})
            deleted = watch.next_event(1)
            self.assertEqual((deleted["type"], deleted["object"]["metadata"]["name"]), ("DELETED", "doomed"))
        finally:
            watch.close()
        self.assert_not_installed()
        self.assertEqual(self.ok(self.request("GET", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"))["items"],
                         [])
        # Installed again: the old objects are gone.
        self.server.install_crds("standard")
        self.assertEqual(self.ok(self.request("GET", routes("v1")))["items"], [])
        self.server.remove_crds()

    def test_5_ctl_and_control_api(self):
        script = os.path.join(HERE, "apiserver.py")

        def ctl(*arguments: str) -> dict:
            result = subprocess.run([sys.executable, script, "ctl", "--dir", self.directory, *arguments],
                                    capture_output=True, text=True, timeout=30, check=True)
            return json.loads(result.stdout)

        installed = ctl("install-crds", "experimental", CRD_DIRECTORY)
        self.assertEqual(installed["channel"], "experimental")
        self.assertEqual(installed["resources"][f"tcproutes.{GROUP}"]["served"], ["v1", "v1alpha2"])
        self.assertEqual(ctl("crds")["resources"][f"httproutes.{GROUP}"]["served"], ["v1", "v1beta1"])
        self.ok(self.request("GET", routes("v1alpha2")))
        installed = ctl("install-crds", "standard")
        self.assertEqual(installed["resources"][f"tcproutes.{GROUP}"]["served"], ["v1"])
        self.failure(self.request("GET", routes("v1alpha2")), 404, "NotFound")
        self.assertEqual(ctl("remove-crds")["resources"], {})
        self.failure(self.request("GET", f"/apis/{GROUP}"), 404, "NotFound")
        client = apiserver.ControlClient(self.directory)
        with self.assertRaises(RuntimeError):
            client.install_crds("nightly")


class YAMLTests(unittest.TestCase):
    @unittest.skipUnless(HAVE_CRDS, "no CRD files")
    def test_mini_loader_reads_the_crds_as_pyyaml_does(self):
        try:
            import yaml
        except ImportError:
            self.skipTest("PyYAML is not installed")
        paths = sorted(glob.glob(os.path.join(CRD_DIRECTORY, "*", "*.yaml")))
        self.assertGreaterEqual(len(paths), 10)
        for path in paths:
            with open(path) as file:
                text = file.read()
            with self.subTest(path=path):
                expected = [d for d in yaml.safe_load_all(text) if d is not None]
                self.assertEqual(apiserver.MiniYAML.load_all(text), expected)

    def test_mini_loader_constructs(self):
        text = ('a: 1\nb: "x\\ty \\\n  z"\nc: |-\n  line 1\n\n  line 2\nd:\n- k: v\n  l: [1, "two"]\n- plain\n'
                '  continued\ne: {}\nf: \'it\'\'s\'\ng: >-\n  folded\n  text\nh: ~\ni: true  # comment\n')
        self.assertEqual(apiserver.MiniYAML.load_all(text), [{
            "a": 1, "b": "x\ty z", "c": "line 1\n\nline 2", "d": [{"k": "v", "l": [1, "two"]}, "plain continued"],
            "e": {}, "f": "it's", "g": "folded text", "h": None, "i": True}])


# -------------------------------------------------------------------- routes


@unittest.skipUnless(HAVE_CRDS, f"no Gateway API CRDs in {CRD_DIRECTORY}")
class RouteTests(ServerCase):
    channel = "experimental"

    def create(self, route: dict, version: str = "v1", kind: str = "tcproutes") -> dict:
        return self.ok(self.request("POST", routes(version, kind), route), 201)

    def test_tcproute_v1alpha2_create_get_list_watch_read_as_v1(self):
        listed = self.ok(self.request("GET", routes("v1")))
        watch = self.watch(routes("v1") + f"?watch=true&resourceVersion={listed['metadata']['resourceVersion']}"
                                          "&timeoutSeconds=10")
        try:
            created = self.create(tcp_route("alpha", "v1alpha2"), "v1alpha2")
            self.assertEqual(created["apiVersion"], f"{GROUP}/v1alpha2")
            self.assertEqual(created["metadata"]["generation"], 1)
            self.assertTrue(created["metadata"]["uid"])
            got = self.ok(self.request("GET", routes("v1") + "/alpha"))
            self.assertEqual(got["apiVersion"], f"{GROUP}/v1")
            self.assertEqual(got["kind"], "TCPRoute")
            self.assertEqual(got["metadata"], created["metadata"])
            self.assertEqual(got["spec"], created["spec"])
            again = self.ok(self.request("GET", routes("v1alpha2") + "/alpha"))
            self.assertEqual(again["apiVersion"], f"{GROUP}/v1alpha2")
            listing = self.ok(self.request("GET", routes("v1")))
            self.assertEqual(listing["kind"], "TCPRouteList")
            self.assertEqual(listing["apiVersion"], f"{GROUP}/v1")
            item = next(i for i in listing["items"] if i["metadata"]["name"] == "alpha")
            self.assertEqual((item["apiVersion"], item["kind"]), (f"{GROUP}/v1", "TCPRoute"))
            self.assertGreater(int(listing["metadata"]["resourceVersion"]), int(listed["metadata"]["resourceVersion"]))
            # All namespaces, and another namespace.
            self.assertIn("alpha", [i["metadata"]["name"] for i in
                                    self.ok(self.request("GET", f"/apis/{GROUP}/v1/tcproutes"))["items"]])
            self.assertEqual(self.ok(self.request("GET", routes("v1", namespace="elsewhere")))["items"], [])
            event = watch.next_event(0)
            self.assertEqual(event["type"], "ADDED")
            self.assertEqual(event["object"]["apiVersion"], f"{GROUP}/v1")
            self.assertEqual(event["object"]["metadata"]["name"], "alpha")
            self.ok(self.request("PATCH", routes("v1alpha2") + "/alpha", {"metadata": {"labels": {"a": "b"}}}, MERGE))
            event = watch.next_event(1)
            self.assertEqual((event["type"], event["object"]["metadata"]["labels"]), ("MODIFIED", {"a": "b"}))
            self.assertEqual(event["object"]["apiVersion"], f"{GROUP}/v1")
            self.ok(self.request("DELETE", routes("v1") + "/alpha"))
            self.assertEqual(watch.next_event(2)["type"], "DELETED")
            self.failure(self.request("GET", routes("v1") + "/alpha"), 404, "NotFound")
        finally:
            watch.close()

    def test_paging_and_selectors(self):
        for index in range(3):
            self.create(tcp_route(f"page-{index}", labels={"set": "paging", "index": str(index)}))
        first = self.ok(self.request("GET", routes("v1") + "?labelSelector=set%3Dpaging&limit=2"))
        self.assertEqual([i["metadata"]["name"] for i in first["items"]], ["page-0", "page-1"])
        self.assertEqual(first["metadata"]["remainingItemCount"], 1)
        rest = self.ok(self.request("GET", routes("v1") + f"?labelSelector=set%3Dpaging&limit=2"
                                                          f"&continue={first['metadata']['continue']}"))
        self.assertEqual([i["metadata"]["name"] for i in rest["items"]], ["page-2"])
        self.assertEqual([i["metadata"]["name"] for i in self.ok(self.request(
            "GET", routes("v1") + "?fieldSelector=metadata.name%3Dpage-1"))["items"]], ["page-1"])
        deleted = self.ok(self.request("DELETE", routes("v1") + "?labelSelector=set%3Dpaging"))
        self.assertEqual(len(deleted["items"]), 3)
        self.assertEqual(self.ok(self.request("GET", routes("v1") + "?labelSelector=set%3Dpaging"))["items"], [])

    def test_generation_changes_only_with_spec(self):
        route = self.create(tcp_route("gen"))
        self.assertEqual(route["metadata"]["generation"], 1)
        # Metadata only: a new resourceVersion, the same generation.
        route["metadata"]["labels"] = {"team": "shop"}
        updated = self.ok(self.request("PUT", routes("v1") + "/gen", route))
        self.assertEqual(updated["metadata"]["generation"], 1)
        self.assertNotEqual(updated["metadata"]["resourceVersion"], route["metadata"]["resourceVersion"])
        # Status: the same generation.
        updated["status"] = route_status(1)
        with_status = self.ok(self.request("PUT", routes("v1") + "/gen/status", updated))
        self.assertEqual(with_status["metadata"]["generation"], 1)
        # Spec: the next generation, also through the other served version and through patches.
        with_status["spec"]["rules"][0]["backendRefs"][0]["weight"] = 50
        updated = self.ok(self.request("PUT", routes("v1") + "/gen", with_status))
        self.assertEqual(updated["metadata"]["generation"], 2)
        patched = self.ok(self.request("PATCH", routes("v1alpha2") + "/gen",
                                       [{"op": "replace", "path": "/spec/rules/0/backendRefs/1/weight", "value": 50}],
                                       JSON_PATCH))
        self.assertEqual(patched["metadata"]["generation"], 3)
        patched = self.ok(self.request("PATCH", routes("v1") + "/gen",
                                       {"metadata": {"annotations": {"note": "metadata only"}}}, MERGE))
        self.assertEqual(patched["metadata"]["generation"], 3)
        # An update that changes nothing stores nothing.
        same = self.ok(self.request("PUT", routes("v1") + "/gen", patched))
        self.assertEqual(same["metadata"]["resourceVersion"], patched["metadata"]["resourceVersion"])
        self.assertEqual(same["metadata"]["generation"], 3)

    def test_status_subresource_isolation(self):
        route = tcp_route("iso")
        route["status"] = route_status(7)
        created = self.create(route)
        self.assertNotIn("status", created)  # dropped on create
        # A write of the resource ignores status.
        created["status"] = route_status(1)
        created["spec"]["rules"][0]["backendRefs"][0]["weight"] = 70
        updated = self.ok(self.request("PUT", routes("v1") + "/iso", created))
        self.assertNotIn("status", updated)
        self.assertEqual(updated["spec"]["rules"][0]["backendRefs"][0]["weight"], 70)
        # A status write changes only status: not spec, not labels.
        updated["status"] = route_status(2)
        updated["spec"]["rules"][0]["backendRefs"][0]["weight"] = 1
        updated["metadata"]["labels"] = {"sneaky": "yes"}
        written = self.ok(self.request("PUT", routes("v1") + "/iso/status", updated))
        self.assertEqual(written["status"], route_status(2))
        self.assertEqual(written["spec"]["rules"][0]["backendRefs"][0]["weight"], 70)
        self.assertNotIn("labels", written["metadata"])
        self.assertEqual(written["metadata"]["generation"], 2)
        stored = self.ok(self.request("GET", routes("v1") + "/iso"))
        self.assertEqual(stored["status"], route_status(2))
        # Status kept by a later write of the resource; a merge patch of status through the resource is ignored.
        patched = self.ok(self.request("PATCH", routes("v1") + "/iso",
                                       {"spec": {"rules": [{"backendRefs": [{"name": "solo", "port": 80}]}]},
                                        "status": {"parents": []}}, MERGE))
        self.assertEqual(patched["status"], route_status(2))
        self.assertEqual(patched["metadata"]["generation"], 3)
        # A merge patch of the status subresource changes status only.
        patched = self.ok(self.request("PATCH", routes("v1") + "/iso/status",
                                       {"spec": {"rules": []}, "status": route_status(3)}, MERGE))
        self.assertEqual(patched["status"], route_status(3))
        self.assertEqual(patched["spec"]["rules"][0]["backendRefs"][0]["name"], "solo")
        # GET of the status subresource; a kind without one has no such path.
        self.assertEqual(self.ok(self.request("GET", routes("v1") + "/iso/status"))["status"], route_status(3))
        self.failure(self.request("GET", routes("v1", "referencegrants") + "/x/status"), 404, "NotFound")

    def test_stale_resource_version_conflicts(self):
        created = self.create(tcp_route("stale"))
        stale = json.loads(json.dumps(created))
        created["spec"]["rules"][0]["backendRefs"][0]["weight"] = 1
        self.ok(self.request("PUT", routes("v1") + "/stale", created))
        stale["spec"]["rules"][0]["backendRefs"][0]["weight"] = 2
        conflict = self.failure(self.request("PUT", routes("v1") + "/stale", stale), 409, "Conflict")
        self.assertEqual(conflict["message"], f'Operation cannot be fulfilled on tcproutes.{GROUP} "stale": the '
                                              "object has been modified; please apply your changes to the latest "
                                              "version and try again")
        self.assertEqual(conflict["details"], {"name": "stale", "group": GROUP, "kind": "tcproutes"})
        stale["status"] = route_status(1)
        self.failure(self.request("PUT", routes("v1") + "/stale/status", stale), 409, "Conflict")
        self.failure(self.request("PATCH", routes("v1") + "/stale",
                                  {"metadata": {"resourceVersion": stale["metadata"]["resourceVersion"]},
                                   "spec": {"rules": [{"backendRefs": [{"name": "x"}]}]}}, MERGE), 409, "Conflict")
        current = self.ok(self.request("GET", routes("v1") + "/stale"))
        self.assertEqual(current["spec"]["rules"][0]["backendRefs"][0]["weight"], 1)
        self.assertNotIn("status", current)
        # No resourceVersion at all: custom resources do not allow unconditional updates.
        del current["metadata"]["resourceVersion"]
        missing = self.failure(self.request("PUT", routes("v1") + "/stale", current), 422, "Invalid")
        self.assertIn("metadata.resourceVersion: Invalid value: 0: must be specified for an update", missing["message"])
        # Creating an existing name; replacing a missing object.
        self.failure(self.request("POST", routes("v1"), tcp_route("stale")), 409, "AlreadyExists")
        ghost = tcp_route("ghost")
        ghost["metadata"]["resourceVersion"] = "5"
        self.failure(self.request("PUT", routes("v1") + "/ghost", ghost), 404, "NotFound")
        # Delete preconditions.
        self.failure(self.request("DELETE", routes("v1") + "/stale",
                                  {"kind": "DeleteOptions", "apiVersion": "v1",
                                   "preconditions": {"resourceVersion": "1"}}), 409, "Conflict")

    def test_out_of_range_weight_is_invalid(self):
        route = tcp_route("heavy", weights=(1000001,))
        answer = self.failure(self.request("POST", routes("v1"), route), 422, "Invalid")
        self.assertEqual(answer["message"],
                         f'TCPRoute.{GROUP} "heavy" is invalid: spec.rules[0].backendRefs[0].weight: Invalid value: '
                         "1000001: spec.rules[0].backendRefs[0].weight in body should be less than or equal to 1000000")
        self.assertEqual(answer["details"]["causes"], [{
            "reason": "FieldValueInvalid", "field": "spec.rules[0].backendRefs[0].weight",
            "message": "Invalid value: 1000001: spec.rules[0].backendRefs[0].weight in body should be less than or "
                       "equal to 1000000"}])
        self.assertEqual((answer["details"]["name"], answer["details"]["kind"]), ("heavy", "TCPRoute"))
        self.failure(self.request("GET", routes("v1") + "/heavy"), 404, "NotFound")
        # Also on update, and below the minimum.
        created = self.create(tcp_route("heavy"))
        created["spec"]["rules"][0]["backendRefs"][0]["weight"] = -1
        answer = self.failure(self.request("PUT", routes("v1") + "/heavy", created), 422, "Invalid")
        self.assertIn("spec.rules[0].backendRefs[0].weight: Invalid value: -1: spec.rules[0].backendRefs[0].weight in "
                      "body should be greater than or equal to 0", answer["message"])
        self.assertEqual(self.ok(self.request("GET", routes("v1") + "/heavy"))["spec"]["rules"][0]["backendRefs"][0]
                         ["weight"], 90)

    def test_too_many_backend_refs_is_invalid(self):
        answer = self.failure(self.request("POST", routes("v1"), tcp_route("crowd", weights=[1] * 17)), 422, "Invalid")
        self.assertEqual(answer["message"], f'TCPRoute.{GROUP} "crowd" is invalid: spec.rules[0].backendRefs: '
                                            "Too many: 17: must have at most 16 items")
        self.assertEqual(answer["details"]["causes"][0]["field"], "spec.rules[0].backendRefs")
        self.assertEqual(answer["details"]["causes"][0]["reason"], "FieldValueTooMany")
        self.ok(self.request("POST", routes("v1"), tcp_route("crowd", weights=[1] * 16)), 201)

    def test_other_schema_checks(self):
        route = tcp_route("checks")
        del route["spec"]["rules"]
        route["spec"]["useDefaultGateways"] = "Some"
        route["spec"]["parentRefs"][0]["port"] = "eighty"
        answer = self.failure(self.request("POST", routes("v1"), route), 422, "Invalid")
        self.assertIn("spec.rules: Required value", answer["message"])
        self.assertIn('spec.useDefaultGateways: Unsupported value: "Some": supported values: "All", "None"',
                      answer["message"])
        self.assertIn('spec.parentRefs[0].port: Invalid value: "string": spec.parentRefs[0].port in body must be of '
                      'type integer: "string"', answer["message"])
        self.assertTrue(answer["message"].startswith(f'TCPRoute.{GROUP} "checks" is invalid: ['))
        route = tcp_route("checks")
        route["spec"]["rules"][0]["backendRefs"] = []
        route["spec"]["parentRefs"][0]["name"] = "x" * 254
        answer = self.failure(self.request("POST", routes("v1"), route), 422, "Invalid")
        self.assertIn("spec.rules[0].backendRefs: Invalid value: 0: spec.rules[0].backendRefs in body should have at "
                      "least 1 items", answer["message"])
        self.assertIn("spec.parentRefs[0].name: Too long: may not be more than 253 bytes", answer["message"])
        route = tcp_route("Checks")
        route["spec"]["rules"][0]["name"] = "Not_A_Name"
        answer = self.failure(self.request("POST", routes("v1"), route), 422, "Invalid")
        self.assertIn('metadata.name: Invalid value: "Checks"', answer["message"])
        self.assertIn("spec.rules[0].name in body should match", answer["message"])
        # Status is validated on a status write.
        created = self.create(tcp_route("checks"))
        created["status"] = route_status(1)
        created["status"]["parents"][0]["conditions"][0]["status"] = "Maybe"
        answer = self.failure(self.request("PUT", routes("v1") + "/checks/status", created), 422, "Invalid")
        self.assertIn('status.parents[0].conditions[0].status: Unsupported value: "Maybe"', answer["message"])

    def test_defaults_applied(self):
        route = {"apiVersion": f"{GROUP}/v1", "kind": "TCPRoute", "metadata": {"name": "defaults"},
                 "spec": {"parentRefs": [{"name": "gw"}], "rules": [{"backendRefs": [{"name": "backend", "port": 80}]}]}}
        created = self.create(route)
        self.assertEqual(created["spec"]["rules"][0]["backendRefs"][0],
                         {"name": "backend", "port": 80, "weight": 1, "group": "", "kind": "Service"})
        self.assertEqual(created["spec"]["parentRefs"][0], {"name": "gw", "group": GROUP, "kind": "Gateway"})
        self.assertEqual(created["metadata"]["namespace"], NS)
        # An explicit value is kept.
        self.assertEqual(self.create(tcp_route("explicit", weights=(0,)))["spec"]["rules"][0]["backendRefs"][0]["weight"], 0)
        # HTTPRoute: the default rule, with its default match.
        http_route = {"apiVersion": f"{GROUP}/v1", "kind": "HTTPRoute", "metadata": {"name": "web"},
                      "spec": {"parentRefs": [{"group": "", "kind": "Service", "name": "shop"}]}}
        created = self.create(http_route, kind="httproutes")
        self.assertEqual(created["spec"]["rules"], [{"matches": [{"path": {"type": "PathPrefix", "value": "/"}}]}])
        http_route["metadata"]["name"] = "web-2"
        http_route["spec"]["rules"] = [{"backendRefs": [{"name": "shop-v2", "port": 80}]}]
        created = self.create(http_route, kind="httproutes")
        self.assertEqual(created["spec"]["rules"][0]["matches"], [{"path": {"type": "PathPrefix", "value": "/"}}])
        self.assertEqual(created["spec"]["rules"][0]["backendRefs"][0]["weight"], 1)
        # Unknown fields are pruned with a warning, or refused when strict.
        route = tcp_route("pruned")
        route["spec"]["surprise"] = True
        answer = self.request("POST", routes("v1"), route)
        self.assertNotIn("surprise", self.ok(answer, 201)["spec"])
        self.assertIn('299 - "unknown field \\"spec.surprise\\""', answer.warnings())
        route["metadata"]["name"] = "strict"
        self.failure(self.request("POST", routes("v1") + "?fieldValidation=Strict", route), 400, "BadRequest")

    def test_patches(self):
        self.create(tcp_route("patched"))
        patched = self.ok(self.request("PATCH", routes("v1") + "/patched",
                                       {"spec": {"rules": [{"backendRefs": [{"name": "backend-0", "port": 8080, "weight": 5},
                                                                            {"name": "backend-1", "port": 8080}]}]},
                                        "metadata": {"labels": {"patched": "merge"}}}, MERGE))
        self.assertEqual([b["weight"] for b in patched["spec"]["rules"][0]["backendRefs"]], [5, 1])
        self.assertEqual(patched["metadata"]["labels"], {"patched": "merge"})
        patched = self.ok(self.request("PATCH", routes("v1") + "/patched", {"metadata": {"labels": {"patched": None}}},
                                       MERGE))
        self.assertNotIn("patched", patched["metadata"].get("labels", {}))
        patched = self.ok(self.request("PATCH", routes("v1") + "/patched", [
            {"op": "test", "path": "/spec/rules/0/backendRefs/0/weight", "value": 5},
            {"op": "add", "path": "/spec/rules/0/backendRefs/-", "value": {"name": "backend-2", "port": 8080}}],
            JSON_PATCH))
        self.assertEqual([b["weight"] for b in patched["spec"]["rules"][0]["backendRefs"]], [5, 1, 1])
        self.failure(self.request("PATCH", routes("v1") + "/patched",
                                  [{"op": "test", "path": "/spec/rules/0/backendRefs/0/weight", "value": 6}], JSON_PATCH),
                     422, "Invalid")
        invalid = self.failure(self.request("PATCH", routes("v1") + "/patched",
                                            {"spec": {"rules": [{"backendRefs": [{"name": "b", "weight": 2000000}]}]}},
                                            MERGE), 422, "Invalid")
        self.assertIn("spec.rules[0].backendRefs[0].weight", invalid["details"]["causes"][0]["field"])
        self.failure(self.request("PATCH", routes("v1") + "/patched", {"spec": {}},
                                  "application/strategic-merge-patch+json"), 415, "UnsupportedMediaType")
        self.failure(self.request("PATCH", routes("v1") + "/nobody", {"spec": {}}, MERGE), 404, "NotFound")

    def test_finalizers_hold_deletion(self):
        route = tcp_route("held")
        route["metadata"]["finalizers"] = ["example.com/hold"]
        self.create(route)
        deleting = self.ok(self.request("DELETE", routes("v1") + "/held"))
        self.assertTrue(deleting["metadata"]["deletionTimestamp"])
        self.assertEqual(deleting["metadata"]["generation"], 2)
        self.ok(self.request("PATCH", routes("v1") + "/held", {"metadata": {"finalizers": None}}, MERGE))
        self.failure(self.request("GET", routes("v1") + "/held"), 404, "NotFound")

    def test_event_about_a_route(self):
        event = {"apiVersion": "v1", "kind": "Event",
                 "metadata": {"name": "web.17f0a1", "namespace": NS},
                 "involvedObject": {"apiVersion": f"{GROUP}/v1", "kind": "TCPRoute", "namespace": NS,
                                    "name": "web", "uid": "u-1"},
                 "reason": "Programmed", "message": "weights 90/10 programmed", "type": "Normal",
                 "source": {"component": "canary-agent"}, "count": 1}
        created = self.ok(self.request("POST", f"/api/v1/namespaces/{NS}/events", event), 201)
        self.assertEqual(created["involvedObject"]["kind"], "TCPRoute")
        self.assertIn("web.17f0a1", [e["metadata"]["name"] for e in self.server.events()])
        self.failure(self.request("POST", f"/api/v1/namespaces/{NS}/events", event), 409, "AlreadyExists")

    def test_write_log_times_spec_to_status(self):
        since = time.time()
        created = self.create(tcp_route("timed"))
        created["spec"]["rules"][0]["backendRefs"][0]["weight"] = 42
        updated = self.ok(self.request("PUT", routes("v1") + "/timed", created))
        self.assertEqual(updated["metadata"]["generation"], 2)
        updated["status"] = route_status(2)
        self.ok(self.request("PUT", routes("v1") + "/timed/status", updated))
        updated["status"] = route_status(1)  # stale now: refused, and logged as refused
        self.failure(self.request("PUT", routes("v1") + "/timed/status", updated), 409, "Conflict")
        client = apiserver.ControlClient(self.directory)
        writes = client.writes(since, name="timed")
        self.assertEqual([(w["verb"], w["subresource"], w["code"]) for w in writes],
                         [("create", "", 201), ("update", "", 200), ("update", "status", 200),
                          ("update", "status", 409)])
        spec_write = next(w for w in writes if w["subresource"] == "" and w["generation"] == 2)
        status_write = next(w for w in writes if w["subresource"] == "status" and w["code"] == 200)
        observed = status_write["body"]["status"]["parents"][0]["conditions"][0]["observedGeneration"]
        self.assertEqual(observed, spec_write["generation"])
        self.assertEqual(status_write["object"]["status"], route_status(2))
        self.assertLessEqual(spec_write["time"], status_write["time"])
        self.assertTrue(all(w["kind"] == "TCPRoute" and w["namespace"] == NS for w in writes))
        self.assertEqual(len(client.writes(since, name="timed", subresource="status")), 2)
        self.assertTrue(any(r["method"] == "PUT" and r["path"].endswith("/timed/status") for r in client.requests()))

    def test_control_put_and_objects(self):
        route = tcp_route("controlled")
        self.server.put(route)
        self.assertEqual(self.ok(self.request("GET", routes("v1alpha2") + "/controlled"))["metadata"]["generation"], 1)
        route["spec"]["rules"][0]["backendRefs"][0]["weight"] = 3
        self.assertEqual(self.server.put(route)["metadata"]["generation"], 2)
        objects = apiserver.ControlClient(self.directory).objects()
        self.assertIn("controlled", [o["metadata"]["name"] for o in objects[f"/apis/{GROUP}/tcproutes"]])
        self.assertNotIn("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", objects)
        self.assertTrue(self.server.delete("tcproute", NS, "controlled"))


# -------------------------------------------------------------------- leases and the built-in kinds


class LeaseTests(ServerCase):
    PATH = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"

    def lease(self, name: str, holder: str) -> dict:
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name, "namespace": NS},
                "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                         "acquireTime": "2025-01-01T00:00:00Z", "renewTime": "2025-01-01T00:00:00.5Z",
                         "leaseTransitions": 0}}

    def race(self, calls) -> list[Response]:
        """Runs the calls at once (a barrier between threads); their answers in call order."""
        barrier = threading.Barrier(len(calls))
        answers: list[Response | None] = [None] * len(calls)

        def run(index, call):
            barrier.wait()
            answers[index] = call()

        threads = [threading.Thread(target=run, args=(i, c)) for i, c in enumerate(calls)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(20)
        return answers

    def test_two_agents_race_to_create(self):
        answers = self.race([lambda h=h: self.request("POST", self.PATH, self.lease("create-race", h))
                             for h in ("agent-a", "agent-b")])
        self.assertEqual(sorted(a.status for a in answers), [201, 409])
        loser = next(a for a in answers if a.status == 409)
        self.assertEqual(loser.json["reason"], "AlreadyExists")
        self.assertEqual(loser.json["message"], 'leases.coordination.k8s.io "create-race" already exists')
        winner = next(a for a in answers if a.status == 201)
        stored = self.ok(self.request("GET", self.PATH + "/create-race"))
        self.assertEqual(stored["spec"]["holderIdentity"], winner.json["spec"]["holderIdentity"])
        self.assertEqual(stored["spec"]["renewTime"], "2025-01-01T00:00:00.500000Z")  # MicroTime
        self.assertNotIn("generation", stored["metadata"])

    def test_two_agents_race_to_take_over(self):
        lease = self.ok(self.request("POST", self.PATH, self.lease("takeover", "agent-old")), 201)
        calls = []
        for holder in ("agent-a", "agent-b"):
            attempt = json.loads(json.dumps(lease))
            attempt["spec"]["holderIdentity"] = holder
            attempt["spec"]["leaseTransitions"] = 1
            calls.append(lambda body=attempt: self.request("PUT", self.PATH + "/takeover", body))
        answers = self.race(calls)
        self.assertEqual(sorted(a.status for a in answers), [200, 409])
        loser = next(a for a in answers if a.status == 409)
        self.assertEqual(loser.json["reason"], "Conflict")
        self.assertEqual(loser.json["details"], {"name": "takeover", "group": "coordination.k8s.io", "kind": "leases"})
        winner = next(a for a in answers if a.status == 200)
        self.assertEqual(self.ok(self.request("GET", self.PATH + "/takeover"))["spec"]["holderIdentity"],
                         winner.json["spec"]["holderIdentity"])
        # Renewing with the stale version fails too; with the current one it succeeds.
        self.failure(self.request("PUT", self.PATH + "/takeover", lease), 409, "Conflict")
        renewed = json.loads(json.dumps(winner.json))
        renewed["spec"]["renewTime"] = "2025-01-01T00:00:10Z"
        self.ok(self.request("PUT", self.PATH + "/takeover", renewed))

    def test_lease_crud(self):
        # PUT of a missing Lease creates it.
        self.ok(self.request("PUT", self.PATH + "/by-put", self.lease("by-put", "a")), 201)
        listing = self.ok(self.request("GET", self.PATH))
        self.assertEqual(listing["kind"], "LeaseList")
        self.assertIn("by-put", [i["metadata"]["name"] for i in listing["items"]])
        self.assertNotIn("kind", listing["items"][0])  # a built-in kind's list items carry no type fields
        bad = self.lease("bad", "a")
        bad["spec"]["leaseDurationSeconds"] = 0
        answer = self.failure(self.request("POST", self.PATH, bad), 422, "Invalid")
        self.assertIn("spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0", answer["message"])
        bad["spec"]["leaseDurationSeconds"] = "long"
        self.failure(self.request("POST", self.PATH, bad), 400, "BadRequest")
        patched = self.ok(self.request("PATCH", self.PATH + "/by-put", {"spec": {"holderIdentity": "b"}},
                                       "application/strategic-merge-patch+json"))
        self.assertEqual(patched["spec"]["holderIdentity"], "b")
        gone = self.ok(self.request("DELETE", self.PATH + "/by-put"))
        self.assertEqual((gone["kind"], gone["status"]), ("Status", "Success"))
        self.failure(self.request("GET", self.PATH + "/by-put"), 404, "NotFound")
        self.failure(self.request("DELETE", self.PATH + "/by-put"), 404, "NotFound")

    def test_builtin_kinds_unchanged(self):
        self.server.put({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "shop", "namespace": NS},
                         "spec": {"clusterIP": "10.96.0.10"}})
        listing = self.ok(self.request("GET", f"/api/v1/namespaces/{NS}/services"))
        self.assertEqual(listing["kind"], "ServiceList")
        self.assertEqual(listing["items"][0]["metadata"]["generation"], 1)
        self.assertNotIn("kind", listing["items"][0])
        self.assertEqual(self.ok(self.request("GET", f"/api/v1/namespaces/{NS}/services/shop"))["spec"]["clusterIP"],
                         "10.96.0.10")
        self.assertEqual(self.request("POST", f"/api/v1/namespaces/{NS}/services", {"metadata": {"name": "x"}}).status, 405)
        self.assertEqual(self.request("GET", "/api/v1/services", token="wrong").status, 401)
        self.failure(self.request("GET", "/apis/nothing.example.com/v1/things"), 404, "NotFound")
        core = self.ok(self.request("GET", "/api/v1"))
        self.assertIn("services", [r["name"] for r in core["resources"]])


if __name__ == "__main__":
    unittest.main()
