"""Helm chart checks (docs/deploy.md): helm lint, helm template for the default values and every ci/*-values.yaml,
strict offline schema validation of every rendered manifest, and assertions on what the chart renders.

Helm comes from scripts/helm.sh (built once with `go install`, cached in .cache/bin); nothing here skips.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from service.bootstrap import Container
from service.config import Settings
from tests.server import running_server

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "oligocds"
HELM_SH = ROOT / "scripts" / "helm.sh"
PACKAGE_RULES = ROOT / "service" / "rules" / "files"
CHART_RULES = CHART / "files" / "rules"
SERVICE_MONITOR_SCHEMA = Path(__file__).parent / "schemas" / "servicemonitor-monitoring-v1.json"

# The oldest and newest Kubernetes we support: the chart's kubeVersion floor and kubernetes-validate's newest schemas.
OLDEST, NEWEST = "1.27.0", "1.37.0"
KUBERNETES_VERSIONS = (OLDEST, NEWEST)
VALUES: dict[str, Path | None] = {
    "defaults": None,
    **{path.name: path for path in sorted((CHART / "ci").glob("*-values.yaml"))},
}
RELEASE, NAMESPACE = "rel", "clinical"
FULLNAME = f"{RELEASE}-oligocds"
OPTIONAL_KINDS = {"HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy", "ServiceMonitor"}

# Settings with a block of their own in values.yaml instead of a key under `settings`.
SETTINGS_WITH_OWN_BLOCK = {"host", "port", "rules_dir", "store_url", "cds_trusted_issuers"} | {
    name for name in Settings.model_fields if name.startswith("kafka_")
}

Manifest = dict[str, Any]


@dataclass
class Helm:
    binary: str
    env: dict[str, str]
    renders: dict[tuple[str, str], list[Manifest]] = field(default_factory=dict)

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.binary, *args], env=self.env, capture_output=True, text=True, timeout=120, check=False
        )

    def template(self, kube_version: str, *values_args: str) -> subprocess.CompletedProcess[str]:
        return self.run(
            "template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", kube_version, *values_args
        )

    def render(self, values: str, kube_version: str = NEWEST) -> list[Manifest]:
        """The manifests for one entry of VALUES (rendered once per session)."""
        key = (values, kube_version)
        if key not in self.renders:
            self.renders[key] = manifests(self.template(kube_version, *values_args(values)))
        return self.renders[key]


def values_args(values: str) -> list[str]:
    path = VALUES[values]
    return ["--values", str(path)] if path else []


def manifests(result: subprocess.CompletedProcess[str]) -> list[Manifest]:
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="session")
def helm(tmp_path_factory: pytest.TempPathFactory) -> Helm:
    built = subprocess.run(["bash", str(HELM_SH)], capture_output=True, text=True, timeout=1800, check=False)
    if built.returncode != 0:
        pytest.fail(f"scripts/helm.sh could not provide helm:\n{built.stderr}")
    home = tmp_path_factory.mktemp("helm-home")
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(home / "no-kubeconfig"),  # never a real cluster
    }
    return Helm(built.stdout.strip(), env)


# ---------------------------------------------------------------------------------------------------------- helpers


def of_kind(docs: list[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def named(docs: list[Manifest], kind: str, name: str) -> Manifest:
    (doc,) = [doc for doc in of_kind(docs, kind) if doc["metadata"]["name"] == name]
    return doc


def pods(docs: list[Manifest]) -> dict[str, tuple[dict[str, str], dict[str, Any]]]:
    """Pod labels and spec of every Deployment and bare Pod, by object name."""
    found: dict[str, tuple[dict[str, str], dict[str, Any]]] = {}
    for doc in docs:
        if doc["kind"] == "Deployment":
            found[doc["metadata"]["name"]] = (
                doc["spec"]["template"]["metadata"]["labels"],
                doc["spec"]["template"]["spec"],
            )
        elif doc["kind"] == "Pod":
            found[doc["metadata"]["name"]] = (doc["metadata"]["labels"], doc["spec"])
    return found


def container_of(docs: list[Manifest], deployment: str) -> dict[str, Any]:
    (only,) = named(docs, "Deployment", deployment)["spec"]["template"]["spec"]["containers"]
    return dict(only)


def env_of(item: dict[str, Any]) -> dict[str, Any]:
    return {var["name"]: var.get("value", var.get("valueFrom")) for var in item.get("env", [])}


def selectors(node: Any) -> list[dict[str, str]]:
    """Every label selector in a manifest: Deployment/PDB/NetworkPolicy/ServiceMonitor matchLabels, Service selector."""
    if isinstance(node, list):
        return [s for item in node for s in selectors(item)]
    if not isinstance(node, dict):
        return []
    found = [node["matchLabels"]] if isinstance(node.get("matchLabels"), dict) else []
    return found + [s for value in node.values() for s in selectors(value)]


def snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


# ------------------------------------------------------------------------------------------------- schema validation


def _strict(schema: Any) -> Any:
    """Reject unknown fields, as kubernetes-validate's -strict schemas and the API server's field validation do."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    if "properties" in out:
        out["properties"] = {name: _strict(sub) for name, sub in out["properties"].items()}
        if not out.get("x-kubernetes-preserve-unknown-fields"):
            out.setdefault("additionalProperties", False)
    for key in ("items", "additionalProperties"):
        if isinstance(out.get(key), dict):
            out[key] = _strict(out[key])
    for key in ("allOf", "anyOf", "oneOf"):
        if key in out:
            out[key] = [_strict(sub) for sub in out[key]]
    return out


SERVICE_MONITOR_VALIDATOR = jsonschema.Draft202012Validator(_strict(json.loads(SERVICE_MONITOR_SCHEMA.read_text())))


def schema_errors(doc: Manifest, kube_version: str) -> list[str]:
    """Errors of one manifest against the Kubernetes schemas (or the ServiceMonitor CRD's), offline and strict."""
    if (doc["apiVersion"], doc["kind"]) == ("monitoring.coreos.com/v1", "ServiceMonitor"):
        return [f"{error.json_path}: {error.message}" for error in SERVICE_MONITOR_VALIDATOR.iter_errors(doc)]
    try:
        kubernetes_validate.validate(doc, kube_version, strict=True)
    except kubernetes_validate.ValidationError as error:
        return [f"{error.json_path}: {error.message}"]
    return []


# ------------------------------------------------------------------------------------------------------------ tests


def test_helm_is_the_pinned_build(helm: Helm) -> None:
    pinned = re.search(r'^HELM_VERSION="(v[0-9.]+)"', HELM_SH.read_text(), re.MULTILINE)
    assert pinned
    assert helm.run("version", "--template", "{{.Version}}").stdout == pinned[1]


def test_chart_metadata_matches_the_package_and_the_supported_versions() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]
    assert chart["kubeVersion"] == f">={OLDEST}-0"
    shipped = kubernetes_validate.utils.all_versions()
    assert OLDEST in shipped and NEWEST in shipped


def test_chart_rules_are_copies_of_the_package_rules() -> None:
    chart = {path.name: path.read_bytes() for path in CHART_RULES.glob("*.yaml")}
    package = {path.name: path.read_bytes() for path in PACKAGE_RULES.glob("*.yaml")}
    differ = sorted(name for name in chart.keys() | package.keys() if chart.get(name) != package.get(name))
    assert not differ, f"the chart's copies of {differ} differ from service/rules/files: run scripts/helm.sh sync-rules"


@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", VALUES)
def test_lint(helm: Helm, values: str, kube_version: str) -> None:
    result = helm.run("lint", "--strict", str(CHART), "--kube-version", kube_version, *values_args(values))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("values", VALUES)
def test_rendered_manifests_are_valid(helm: Helm, values: str, kube_version: str) -> None:
    docs = helm.render(values, kube_version)
    errors = [f"{d['kind']}/{d['metadata']['name']} {e}" for d in docs for e in schema_errors(d, kube_version)]
    assert not errors, "\n".join(errors)


@pytest.mark.parametrize("kube_version", KUBERNETES_VERSIONS)
def test_validation_rejects_unknown_fields(helm: Helm, kube_version: str) -> None:
    docs = copy.deepcopy(helm.render("full-values.yaml", kube_version))
    deployment, monitor = named(docs, "Deployment", FULLNAME), of_kind(docs, "ServiceMonitor")[0]
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    monitor["spec"]["endpoints"][0]["paths"] = "/metrics"
    assert schema_errors(deployment, kube_version)
    assert schema_errors(monitor, kube_version)


def test_older_kubernetes_is_refused(helm: Helm) -> None:
    result = helm.template("1.26.0")
    assert result.returncode != 0
    assert "kubeVersion" in result.stderr


@pytest.mark.parametrize("values", VALUES)
def test_selectors_match_pod_labels_and_never_carry_the_chart_version(helm: Helm, values: str) -> None:
    docs = helm.render(values)
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "oligocds", doc["kind"]
        assert labels["app.kubernetes.io/instance"] == RELEASE, doc["kind"]
        assert labels["app.kubernetes.io/managed-by"] == "Helm", doc["kind"]
        service_selector = [doc["spec"]["selector"]] if doc["kind"] == "Service" else []
        for selector in selectors(doc) + service_selector:
            assert not [key for key in selector if key.startswith("helm.sh/")], f"{doc['kind']}: {selector}"
    pod_labels = pods(docs)
    for deployment in of_kind(docs, "Deployment"):
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels[deployment["metadata"]["name"]][0].items()
        assert selector["app.kubernetes.io/component"] in {"api", "worker"}
    (service,) = of_kind(docs, "Service")
    matched = [
        name for name, (labels, _) in pod_labels.items() if service["spec"]["selector"].items() <= labels.items()
    ]
    assert matched == [FULLNAME], "the Service must select the API pods only (not the worker or the test pod)"
    for kind in ("PodDisruptionBudget", "NetworkPolicy"):
        for doc in of_kind(docs, kind):
            selected = doc["spec"].get("selector") or doc["spec"]["podSelector"]
            assert selected["matchLabels"].items() <= pod_labels[doc["metadata"]["name"]][0].items(), kind
    for monitor in of_kind(docs, "ServiceMonitor"):
        assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()


@pytest.mark.parametrize("values", VALUES)
def test_api_probes_and_port(helm: Helm, values: str) -> None:
    docs = helm.render(values)
    api = container_of(docs, FULLNAME)
    assert api["args"] == ["serve"]
    assert {"name": "http", "containerPort": 8080, "protocol": "TCP"} in api["ports"]
    assert api["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert api["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert env_of(api)["OLIGOCDS_HOST"] == "0.0.0.0"
    assert env_of(api)["OLIGOCDS_PORT"] == "8080"
    (service,) = of_kind(docs, "Service")
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}]


@pytest.mark.parametrize("values", VALUES)
def test_pods_are_hardened(helm: Helm, values: str) -> None:
    for name, (_, spec) in pods(helm.render(values)).items():
        assert spec["automountServiceAccountToken"] is False, name
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 10001, name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for item in spec["containers"]:
            context = item["securityContext"]
            assert context["runAsNonRoot"] is True and context["runAsUser"] == 10001, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["capabilities"] == {"drop": ["ALL"]}, name
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, name
            assert not context.get("privileged"), name


@pytest.mark.parametrize("values", VALUES)
def test_tmp_is_the_only_writable_path(helm: Helm, values: str) -> None:
    docs = helm.render(values)
    for deployment in of_kind(docs, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        (item,) = spec["containers"]
        writable = [m for m in item["volumeMounts"] if not m.get("readOnly")]
        assert [m["mountPath"] for m in writable] == ["/tmp"]
        assert isinstance(volumes[writable[0]["name"]].get("emptyDir"), dict)


@pytest.mark.parametrize("values", VALUES)
def test_rules_configmap_is_mounted_at_rules_dir(helm: Helm, values: str) -> None:
    docs = helm.render(values)
    (rules,) = of_kind(docs, "ConfigMap")
    package = {path.name: path.read_text(encoding="utf-8") for path in PACKAGE_RULES.glob("*.yaml")}
    assert rules["data"] == package
    for deployment in of_kind(docs, "Deployment"):
        spec = deployment["spec"]["template"]["spec"]
        volumes = {volume["name"]: volume for volume in spec["volumes"]}
        (item,) = spec["containers"]
        rules_dir = env_of(item)["OLIGOCDS_RULES_DIR"]
        (mount,) = [m for m in item["volumeMounts"] if m["mountPath"] == rules_dir]
        assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates (no hot reload)"
        assert mount["readOnly"] is True
        assert volumes[mount["name"]]["configMap"]["name"] == rules["metadata"]["name"]


@pytest.mark.parametrize("values", ["defaults", "default-values.yaml"])
def test_optional_objects_are_off_by_default(helm: Helm, values: str) -> None:
    docs = helm.render(values)
    assert {doc["kind"] for doc in docs} == {"ServiceAccount", "ConfigMap", "Service", "Deployment", "Pod"}
    assert [d["metadata"]["name"] for d in of_kind(docs, "Deployment")] == [FULLNAME]
    assert named(docs, "Deployment", FULLNAME)["spec"]["replicas"] == 1
    api = container_of(docs, FULLNAME)
    assert "startupProbe" not in api
    assert not [name for name in env_of(api) if name.startswith("OLIGOCDS_KAFKA_")]


def test_resources_are_empty_by_default(helm: Helm) -> None:
    for name, (_, spec) in pods(helm.render("defaults")).items():
        assert [item.get("resources") for item in spec["containers"]] == [None], name


@pytest.mark.parametrize("values", [name for name, path in VALUES.items() if path])
def test_ci_values_set_real_resources(helm: Helm, values: str) -> None:
    for name, (_, spec) in pods(helm.render(values)).items():
        for item in spec["containers"]:
            resources = item["resources"]
            assert {"cpu", "memory"} <= resources["requests"].keys(), name
            assert "memory" in resources["limits"], name


def test_full_values_turn_everything_on(helm: Helm) -> None:
    docs = helm.render("full-values.yaml")
    assert {doc["kind"] for doc in docs} >= OPTIONAL_KINDS
    (hpa,) = of_kind(docs, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": FULLNAME}
    assert "replicas" not in named(docs, "Deployment", FULLNAME)["spec"], "the HPA owns the replica count"
    assert of_kind(docs, "PodDisruptionBudget")[0]["apiVersion"] == "policy/v1"
    worker = container_of(docs, f"{FULLNAME}-worker")
    assert worker["args"] == ["worker"]
    assert [p["metadata"]["name"] for p in of_kind(docs, "NetworkPolicy")] == [FULLNAME, f"{FULLNAME}-worker"]
    assert "startupProbe" in container_of(docs, FULLNAME)


def test_kafka_consumer_runs_in_one_place(helm: Helm) -> None:
    docs = helm.render("full-values.yaml")
    api, worker = env_of(container_of(docs, FULLNAME)), env_of(container_of(docs, f"{FULLNAME}-worker"))
    assert not [name for name in api if name.startswith("OLIGOCDS_KAFKA_")], (
        "with the worker on, serve must not consume"
    )
    assert worker["OLIGOCDS_KAFKA_BOOTSTRAP"] == "kafka-0.kafka:9093,kafka-1.kafka:9093"
    assert worker["OLIGOCDS_KAFKA_SASL_PASSWORD"] == {
        "secretKeyRef": {"name": "oligocds-kafka-user", "key": "password"}
    }
    mounts = {m["name"]: m["mountPath"] for m in container_of(docs, f"{FULLNAME}-worker")["volumeMounts"]}
    assert worker["OLIGOCDS_KAFKA_SSL_CAFILE"] == f"{mounts['kafka-tls']}/ca.crt"
    probes = container_of(docs, f"{FULLNAME}-worker")
    assert probes["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert probes["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    in_api = env_of(container_of(manifests(helm.template(NEWEST, "--set", "kafka.bootstrap=kafka:9092")), FULLNAME))
    assert in_api["OLIGOCDS_KAFKA_BOOTSTRAP"] == "kafka:9092", "without the worker, serve runs the consumer"
    tuned = ("--set", "kafka.bootstrap=k:9092", "--set", "kafka.groupId=cds-a", "--set", "kafka.maxRecords=200")
    env = env_of(container_of(manifests(helm.template(NEWEST, *tuned)), FULLNAME))
    settings = Settings.model_validate({k.removeprefix("OLIGOCDS_").lower(): v for k, v in env.items()})
    assert (settings.kafka_group_id, settings.kafka_max_records) == ("cds-a", 200)


def test_secrets_are_referenced_not_inlined(helm: Helm) -> None:
    api = env_of(container_of(helm.render("full-values.yaml"), FULLNAME))
    assert api["OLIGOCDS_STORE_URL"] == {"secretKeyRef": {"name": "oligocds-postgres", "key": "dsn"}}
    assert api["OLIGOCDS_CDS_TRUSTED_ISSUERS"] == {"secretKeyRef": {"name": "oligocds-cds", "key": "trusted-issuers"}}


def test_every_schema_setting_is_a_service_setting(helm: Helm, tmp_path: Path) -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())["properties"]["settings"]["properties"]
    fields = set(Settings.model_fields)
    assert {snake(key) for key in schema} == fields - SETTINGS_WITH_OWN_BLOCK, (
        "values.schema.json `settings` and service/config.py disagree: add the camelCase key of a new setting"
    )
    samples = {"string": "x", "integer": 7, "number": 0.25, "boolean": True}
    settings = {key: spec["enum"][0] if "enum" in spec else samples[spec["type"]] for key, spec in schema.items()}
    values = tmp_path / "settings.yaml"
    values.write_text(yaml.safe_dump({"settings": settings}))
    rendered = env_of(container_of(manifests(helm.template(NEWEST, "--values", str(values))), FULLNAME))
    names = {name.removeprefix("OLIGOCDS_").lower() for name in rendered if name.startswith("OLIGOCDS_")}
    assert names <= fields
    assert {snake(key) for key in settings} <= names
    parsed = Settings.model_validate({name.removeprefix("OLIGOCDS_").lower(): v for name, v in rendered.items()})
    assert parsed.max_body_bytes == 7 and parsed.pathfx_probability == 0.25


def test_whole_numbers_render_without_an_exponent(helm: Helm) -> None:
    api = env_of(container_of(helm.render("full-values.yaml"), FULLNAME))
    assert api["OLIGOCDS_MAX_BODY_BYTES"] == "5242880"
    assert api["OLIGOCDS_PATHFX_PROBABILITY"] == "0.5"
    assert api["OLIGOCDS_SYSTEMIC_INCLUDES_ENDOCRINE"] == "true"


# value → what helm says. Schema errors fail `helm lint` and `helm template`; the chart's own `fail` checks fail
# `helm template` and `helm install` (lint reports them only as INFO).
SCHEMA_ERRORS = {
    "replicaCount-not-an-integer": ({"replicaCount": "x"}, "/replicaCount"),
    "unknown-value": ({"replicas": 2}, "'replicas' not allowed"),
    "unknown-setting": ({"settings": {"publicBaseURL": "https://x"}}, "'publicBaseURL' not allowed"),
    "bad-digest": ({"image": {"digest": "latest"}}, "/image/digest"),
    "pdb-min-and-max": ({"podDisruptionBudget": {"minAvailable": 1, "maxUnavailable": 1}}, "/podDisruptionBudget"),
}
TEMPLATE_ERRORS = {
    "worker-without-kafka": ({"worker": {"enabled": True}}, "worker.enabled needs kafka.bootstrap"),
    "sasl-without-secret": (
        {"kafka": {"bootstrap": "kafka:9092", "sasl": {"mechanism": "PLAIN"}}},
        "kafka.sasl.mechanism needs kafka.sasl.existingSecret",
    ),
}


def bad_values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


@pytest.mark.parametrize("case", SCHEMA_ERRORS)
def test_values_against_the_schema_fail(helm: Helm, tmp_path: Path, case: str) -> None:
    values, message = SCHEMA_ERRORS[case]
    path = bad_values_file(tmp_path, values)
    for result in (helm.template(NEWEST, "--values", path), helm.run("lint", str(CHART), "--values", path)):
        assert result.returncode != 0
        assert message in result.stdout + result.stderr


@pytest.mark.parametrize("case", TEMPLATE_ERRORS)
def test_inconsistent_values_fail_to_render(helm: Helm, tmp_path: Path, case: str) -> None:
    values, message = TEMPLATE_ERRORS[case]
    result = helm.template(NEWEST, "--values", bad_values_file(tmp_path, values))
    assert result.returncode != 0
    assert message in result.stderr


def test_helm_test_pod_checks_readyz_through_the_service(helm: Helm, container: Container, settings: Settings) -> None:
    docs = helm.render("defaults")
    (pod,) = of_kind(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    assert pod["spec"]["restartPolicy"] == "Never"
    (test,) = pod["spec"]["containers"]
    python, flag, script, url = test["command"]
    assert (python, flag) == ("python", "-c")
    assert url == f"http://{FULLNAME}.{NAMESPACE}.svc:8080/readyz"

    def run(target: str) -> int:
        done = subprocess.run([sys.executable, "-c", script, target], capture_output=True, timeout=30, check=False)
        return done.returncode

    with running_server(settings, container) as base:
        assert run(f"{base}/readyz") == 0
        assert run(f"{base}/no-such-path") != 0
