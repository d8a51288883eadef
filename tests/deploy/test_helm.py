"""The Helm chart, checked with the real helm binary and the Kubernetes schemas, offline.

`helm lint --strict` and `helm template` run with the default values and with
ci/production-values.yaml; every rendered object is validated against the
Kubernetes OpenAPI schemas bundled with kubernetes-validate (strict: unknown
fields are errors, and so is a kind it has no schema for); then the properties a
cluster would otherwise reveal only at run time are asserted on the objects.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate.utils as kubernetes_validate
import pytest
import yaml
from cryptography.fernet import Fernet

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "conduit"
PRODUCTION = CHART / "ci" / "production-values.yaml"
RELEASE, NAMESPACE = "conduit", "conduit"
# The oldest version Chart.yaml accepts, the one the docs name, and the newest whose schemas
# kubernetes-validate bundles (catches an API Kubernetes has since removed).
MINIMUM = re.fullmatch(r">=(\d+\.\d+\.\d+)-0", yaml.safe_load((CHART / "Chart.yaml").read_text())["kubeVersion"])
assert MINIMUM is not None, "Chart.yaml kubeVersion should read >=X.Y.Z-0"
KUBERNETES_VERSIONS = (MINIMUM.group(1), "1.30.0", kubernetes_validate.latest_version())
VALUE_FILES = {"default": [], "production": ["--values", str(PRODUCTION)]}
DEFAULT_RESOURCES = {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"cpu": "1000m", "memory": "1Gi"}}
STANDARD_LABELS = {
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
    "app.kubernetes.io/component",
    "app.kubernetes.io/part-of",
    "app.kubernetes.io/managed-by",
    "helm.sh/chart",
}

Run = Callable[..., subprocess.CompletedProcess[str]]
Tool = Callable[[str], str]
Objects = list[dict[str, Any]]


@pytest.fixture(scope="module")
def helm(tool: Tool, run: Run) -> Callable[..., subprocess.CompletedProcess[str]]:
    def call(*args: str) -> subprocess.CompletedProcess[str]:
        return run(tool("helm"), *args)

    return call


@pytest.fixture(scope="module")
def render(helm: Callable[..., subprocess.CompletedProcess[str]]) -> Callable[..., Objects]:
    def template(*args: str) -> Objects:
        result = helm("template", RELEASE, str(CHART), "--namespace", NAMESPACE, "--kube-version", "1.30.0", *args)
        assert result.returncode == 0, result.stderr
        return [document for document in yaml.safe_load_all(result.stdout) if document]

    return template


@pytest.fixture(scope="module", params=sorted(VALUE_FILES))
def objects(request: pytest.FixtureRequest, render: Callable[..., Objects]) -> Objects:
    return render(*VALUE_FILES[request.param])


@pytest.fixture(scope="module")
def default(render: Callable[..., Objects]) -> Objects:
    return render()


@pytest.fixture(scope="module")
def production(render: Callable[..., Objects]) -> Objects:
    return render(*VALUE_FILES["production"])


def find(objects: Objects, kind: str, name: str) -> dict[str, Any]:
    (found,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def pod_templates(objects: Objects) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            yield f"{o['kind']}/{o['metadata']['name']}", o["spec"]["template"]
        elif o["kind"] == "Pod":
            yield f"Pod/{o['metadata']['name']}", o


def container(objects: Objects, component: str) -> dict[str, Any]:
    kind = "Job" if component == "migrate" else "Deployment"
    (only,) = find(objects, kind, f"conduit-{component}")["spec"]["template"]["spec"]["containers"]
    return only


def env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {variable["name"]: variable for variable in container["env"]}


def values() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHART / "values.yaml").read_text())
    return loaded


# --- helm lint, schema ------------------------------------------------------------


@pytest.mark.parametrize("values_file", sorted(VALUE_FILES))
def test_chart_lints_strictly(helm: Callable[..., subprocess.CompletedProcess[str]], values_file: str) -> None:
    result = helm("lint", "--strict", "--kube-version", "1.30.0", str(CHART), *VALUE_FILES[values_file])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize(
    ("setting", "complaint"),
    [
        ("proxy.replicaCount=two", "proxy.replicaCount: Invalid type"),
        ("importer.autoscaling.maxReplicas=true", "importer.autoscaling.maxReplicas: Invalid type"),
        ("proxy.pdb.enabled=yes please", "proxy.pdb.enabled: Invalid type"),
        ("importer.autoscalling.enabled=false", "Additional property autoscalling is not allowed"),
        ("logLevel=verbose", "logLevel must be one of"),
        ("secrets.existingSecret=", "secrets.existingSecret: Does not match pattern"),
        ("image.digest=latest", "image.digest: Does not match pattern"),
        ("proxy.port=70000", "proxy.port: Must be less than or equal to 65535"),
        ("database.url=db.example.internal", "database.url: Does not match pattern"),
        # The importer's values were `worker:` before it was renamed: refused, never silently ignored.
        ("worker.replicaCount=3", "values: `worker` was renamed `importer`"),
        ("worker.importer.maxAttempts=3", "`worker.importer` are both `importer.config` now"),
    ],
)
def test_values_schema_rejects_wrong_values(
    helm: Callable[..., subprocess.CompletedProcess[str]], setting: str, complaint: str
) -> None:
    result = helm("template", RELEASE, str(CHART), "--set", setting)
    assert result.returncode != 0
    assert complaint in result.stderr, result.stderr


def test_inline_client_secret_is_refused(helm: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    tenants = {"providers": {}, "tenants": {"acme": {"providers": {"demo": {"client_id": "a", "client_secret": "s3"}}}}}
    result = helm("template", RELEASE, str(CHART), "--set-json", f"tenants.config={json.dumps(tenants)}")
    assert result.returncode != 0
    assert "tenants.config.tenants.acme.providers.demo.client_secret is written inline" in result.stderr


# --- Kubernetes schemas -----------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_rendered_object_is_valid_kubernetes(objects: Objects, version: str) -> None:
    failures = []
    for o in objects:
        try:
            kubernetes_validate.validate(o, version, strict=True)
        except kubernetes_validate.ValidationError as error:
            failures.append(f"{o['kind']}/{o['metadata']['name']}: {'.'.join(map(str, error.path))}: {error.message}")
        except kubernetes_validate.SchemaNotFoundError as error:
            # The CLI only warns about these; an unknown kind or apiVersion is a failure here.
            failures.append(error.message)
    assert not failures, "\n".join(failures)


def test_the_validator_rejects_what_a_cluster_would() -> None:
    deployment = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**deployment, "spec": {"replicas": "two"}}, "1.30.0", strict=True)
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate({**deployment, "metadata": {"name": "x", "lables": {}}}, "1.30.0", strict=True)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):
        kubernetes_validate.validate(
            {"apiVersion": "policy/v1beta1", "kind": "PodSecurityPolicy"}, "1.30.0", strict=True
        )


# --- what is rendered -------------------------------------------------------------


def test_one_object_per_job_and_no_secret_material(default: Objects) -> None:
    assert sorted(f"{o['kind']}/{o['metadata']['name']}" for o in default) == [
        "ConfigMap/conduit-tenants",
        "Deployment/conduit-importer",
        "Deployment/conduit-proxy",
        "Deployment/conduit-scheduler",
        "HorizontalPodAutoscaler/conduit-importer",
        "Job/conduit-migrate",
        "NetworkPolicy/conduit-proxy",
        "Pod/conduit-test-proxy-ready",
        "PodDisruptionBudget/conduit-proxy",
        "Service/conduit-proxy",
        "ServiceAccount/conduit",
    ]


def test_templates_live_in_a_folder_per_service() -> None:
    for component in ("proxy", "importer", "scheduler", "console"):
        assert (CHART / "templates" / component / f"{component}-deployment.yaml").is_file()
    assert (CHART / "templates" / "migrations" / "migrate-job.yaml").is_file()


def test_every_object_carries_the_standard_labels(objects: Objects) -> None:
    for o in objects:
        labels = o["metadata"]["labels"]
        assert STANDARD_LABELS <= labels.keys(), f"{o['kind']}/{o['metadata']['name']}"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/instance"] == RELEASE
    for name, template in pod_templates(objects):
        assert STANDARD_LABELS <= template["metadata"]["labels"].keys(), name


def test_migration_job_limits_are_the_values_given(default: Objects, production: Objects) -> None:
    """A failed migration is retried once, and stopped after the deadline each values file sets."""
    production_values = yaml.safe_load(PRODUCTION.read_text())["migrations"]
    for rendered, deadline in (
        (default, values()["migrations"]["activeDeadlineSeconds"]),
        (production, production_values["activeDeadlineSeconds"]),
    ):
        spec = find(rendered, "Job", "conduit-migrate")["spec"]
        assert (spec["backoffLimit"], spec["activeDeadlineSeconds"]) == (1, deadline)
    assert (values()["migrations"]["activeDeadlineSeconds"], production_values["activeDeadlineSeconds"]) == (600, 1200)


def test_migration_job_is_a_pre_install_and_pre_upgrade_hook(objects: Objects) -> None:
    job = find(objects, "Job", "conduit-migrate")
    annotations = job["metadata"]["annotations"]
    assert annotations["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert annotations["helm.sh/hook-delete-policy"] == "before-hook-creation"
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"
    migrate = container(objects, "migrate")
    assert migrate["args"] == ["migrate"]
    # A pre-install hook runs before the chart's own objects exist: it may use none of them.
    assert "serviceAccountName" not in pod
    assert all("configMap" not in volume for volume in pod["volumes"])
    assert set(env(migrate)) == {"CONDUIT_DATABASE_URL", "CONDUIT_LOG_LEVEL"}


def test_proxy_probes_health_check_and_ready_on_its_port(objects: Objects) -> None:
    proxy = container(objects, "proxy")
    (port,) = proxy["ports"]
    assert proxy["livenessProbe"]["httpGet"] == {"path": "/health_check", "port": port["name"]}
    assert proxy["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
    assert env(proxy)["CONDUIT_PROXY_PORT"]["value"] == str(port["containerPort"])


def test_importer_probes_its_http_endpoint(objects: Objects) -> None:
    """Liveness on /health_check (tests/e2e/test_liveness.py: answers at once with Redis down), not arq --check."""
    importer = container(objects, "importer")
    (port,) = importer["ports"]
    assert importer["livenessProbe"]["httpGet"] == {"path": "/health_check", "port": port["name"]}
    assert importer["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
    assert env(importer)["CONDUIT_IMPORTER_HTTP_PORT"]["value"] == str(port["containerPort"]) == "8081"


def test_scheduler_probes_its_http_endpoint(objects: Objects) -> None:
    scheduler = container(objects, "scheduler")
    (port,) = scheduler["ports"]
    assert scheduler["livenessProbe"]["httpGet"] == {"path": "/health_check", "port": port["name"]}
    assert scheduler["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
    assert env(scheduler)["CONDUIT_SCHEDULER_HTTP_PORT"]["value"] == str(port["containerPort"]) == "8082"


def test_every_container_gets_the_default_requests_and_limits(default: Objects) -> None:
    for component in ("proxy", "importer", "scheduler", "migrate"):
        assert container(default, component)["resources"] == DEFAULT_RESOURCES, component


def test_production_values_override_resources(production: Objects) -> None:
    assert container(production, "proxy")["resources"]["limits"]["cpu"] == "2000m"


def test_pods_run_non_root_on_a_read_only_root_filesystem(objects: Objects) -> None:
    for name, template in pod_templates(objects):
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["automountServiceAccountToken"] is False, name
        for c in pod["containers"]:
            context = c["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            if name.startswith("Pod/"):
                continue  # the `helm test` pod only runs the stdlib health check and writes nothing
            # The one writable place, as the root filesystem is not.
            mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], name


def test_network_policy_admits_only_labelled_pods_to_the_proxy(objects: Objects) -> None:
    policy = find(objects, "NetworkPolicy", "conduit-proxy")["spec"]
    proxy = find(objects, "Deployment", "conduit-proxy")
    client_labels = values()["proxy"]["networkPolicy"]["clientLabels"]
    assert policy["podSelector"] == proxy["spec"]["selector"]
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert rule["from"][0] == {"podSelector": {"matchLabels": client_labels}}
    assert rule["ports"] == [{"port": container(objects, "proxy")["ports"][0]["containerPort"], "protocol": "TCP"}]
    # The importers call the proxy, so they carry the labels; nothing else in the chart needs them.
    importer_labels = find(objects, "Deployment", "conduit-importer")["spec"]["template"]["metadata"]["labels"]
    assert client_labels.items() <= importer_labels.items()
    for component in ("proxy", "scheduler"):
        labels = find(objects, "Deployment", f"conduit-{component}")["spec"]["template"]["metadata"]["labels"]
        assert not client_labels.keys() & labels.keys(), component


def test_production_network_policy_adds_its_monitoring_peer(production: Objects) -> None:
    (rule,) = find(production, "NetworkPolicy", "conduit-proxy")["spec"]["ingress"]
    assert len(rule["from"]) == 2
    assert rule["from"][1]["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "monitoring"}


def test_helm_test_reaches_the_proxy_as_a_labelled_client(objects: Objects) -> None:
    pod = find(objects, "Pod", "conduit-test-proxy-ready")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    client_labels = values()["proxy"]["networkPolicy"]["clientLabels"]
    assert client_labels.items() <= pod["metadata"]["labels"].items()
    service = find(objects, "Service", "conduit-proxy")
    (probe,) = pod["spec"]["containers"]
    url = f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}/ready"
    assert probe["command"] == ["/usr/bin/python3.11", "-I", "/app/healthcheck.py", url]


def test_service_and_disruption_budget_select_the_proxy_pods(objects: Objects) -> None:
    proxy = find(objects, "Deployment", "conduit-proxy")
    pod_labels = proxy["spec"]["template"]["metadata"]["labels"]
    service = find(objects, "Service", "conduit-proxy")["spec"]
    assert service["selector"].items() <= pod_labels.items()
    assert service["ports"][0]["targetPort"] == container(objects, "proxy")["ports"][0]["name"]
    budget = find(objects, "PodDisruptionBudget", "conduit-proxy")["spec"]
    assert budget["selector"] == proxy["spec"]["selector"]
    assert budget["maxUnavailable"] < proxy["spec"]["replicas"]


def test_importers_scale_with_a_horizontal_pod_autoscaler(objects: Objects) -> None:
    autoscaler = find(objects, "HorizontalPodAutoscaler", "conduit-importer")["spec"]
    assert autoscaler["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "conduit-importer"}
    assert 1 <= autoscaler["minReplicas"] <= autoscaler["maxReplicas"]
    # Left to the autoscaler: a replicas field would reset the scale on every upgrade.
    assert "replicas" not in find(objects, "Deployment", "conduit-importer")["spec"]


def test_fixed_importer_count_without_autoscaling(render: Callable[..., Objects]) -> None:
    fixed = render("--set", "importer.autoscaling.enabled=false", "--set", "importer.replicaCount=7")
    assert find(fixed, "Deployment", "conduit-importer")["spec"]["replicas"] == 7
    assert not [o for o in fixed if o["kind"] == "HorizontalPodAutoscaler"]


def test_credentials_are_secret_references(default: Objects, production: Objects) -> None:
    for objects, urls_from in ((default, ("conduit", "conduit")), (production, ("conduit-redis", "conduit-postgres"))):
        assert not [o for o in objects if o["kind"] == "Secret"]
        token_secret = "conduit" if objects is default else "conduit-token-key"
        for component in ("proxy", "importer", "scheduler"):
            variables = env(container(objects, component))
            key = variables["CONDUIT_TOKEN_KEY"]["valueFrom"]["secretKeyRef"]
            assert key == {"name": token_secret, "key": "token-key"}
            old = variables["CONDUIT_TOKEN_KEY_OLD"]["valueFrom"]["secretKeyRef"]
            assert old == {"name": token_secret, "key": "token-key-old", "optional": True}
            redis = variables["CONDUIT_REDIS_URL"]["valueFrom"]["secretKeyRef"]["name"]
            database = variables["CONDUIT_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
            assert (redis, database) == urls_from


def test_external_urls_without_passwords_may_be_plain_values(render: Callable[..., Objects]) -> None:
    plain = render("--set", "database.url=postgresql://db.internal/conduit", "--set", "redis.url=redis://redis:6379/0")
    for component in ("proxy", "importer", "scheduler", "migrate"):
        assert env(container(plain, component))["CONDUIT_DATABASE_URL"] == {
            "name": "CONDUIT_DATABASE_URL",
            "value": "postgresql://db.internal/conduit",
        }
    assert env(container(plain, "importer"))["CONDUIT_REDIS_URL"]["value"] == "redis://redis:6379/0"


def test_an_upstream_ca_bundle_is_mounted_for_the_proxy_only(render: Callable[..., Objects], default: Objects) -> None:
    assert "CONDUIT_PROXY_UPSTREAM_CA_FILE" not in env(container(default, "proxy"))
    objects = render(
        "--set", "proxy.upstreamCA.existingConfigMap=egress-ca", "--set", "proxy.upstreamCA.key=bundle.pem"
    )
    proxy = find(objects, "Deployment", "conduit-proxy")["spec"]["template"]["spec"]
    assert {"name": "upstream-ca", "configMap": {"name": "egress-ca"}} in proxy["volumes"]
    mount = next(m for m in proxy["containers"][0]["volumeMounts"] if m["name"] == "upstream-ca")
    variable = env(proxy["containers"][0])["CONDUIT_PROXY_UPSTREAM_CA_FILE"]["value"]
    assert variable == f"{mount['mountPath']}/bundle.pem" and mount["readOnly"] is True
    for component in ("importer", "scheduler"):
        assert "CONDUIT_PROXY_UPSTREAM_CA_FILE" not in env(container(objects, component))


def test_a_redis_ca_bundle_is_mounted_for_every_redis_client(render: Callable[..., Objects], default: Objects) -> None:
    assert "CONDUIT_REDIS_CA_FILE" not in env(container(default, "proxy"))
    objects = render("--set", "redis.caConfigMap=redis-ca", "--set", "redis.caKey=bundle.pem")
    for component in ("proxy", "importer", "scheduler"):
        pod = find(objects, "Deployment", f"conduit-{component}")["spec"]["template"]["spec"]
        assert {"name": "redis-ca", "configMap": {"name": "redis-ca"}} in pod["volumes"], component
        mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["name"] == "redis-ca")
        variable = env(pod["containers"][0])["CONDUIT_REDIS_CA_FILE"]["value"]
        assert variable == f"{mount['mountPath']}/bundle.pem" and mount["readOnly"] is True, component


def test_tenants_file_is_the_mounted_config_map(objects: Objects) -> None:
    config_map = find(objects, "ConfigMap", "conduit-tenants")
    tenants = yaml.safe_load(config_map["data"]["tenants.yaml"])
    assert set(tenants) == {"providers", "tenants"}
    for component in ("proxy", "importer", "scheduler"):
        c = container(objects, component)
        path = Path(env(c)["CONDUIT_TENANTS_FILE"]["value"])
        pod = find(objects, "Deployment", f"conduit-{component}")["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        (mount,) = [m for m in c["volumeMounts"] if Path(m["mountPath"]) == path.parent]
        assert volumes[mount["name"]]["configMap"]["name"] == "conduit-tenants" and mount["readOnly"] is True
        assert path.name in config_map["data"]


def test_production_tenants_file_is_one_conduit_accepts(production: Objects, tmp_path: Path) -> None:
    from shared.tenants import load_tenants

    path = tmp_path / "tenants.yaml"
    path.write_text(find(production, "ConfigMap", "conduit-tenants")["data"]["tenants.yaml"])
    # The secrets live in Secrets on the cluster; everything else must validate here.
    tenants = load_tenants(path, resolve_secrets=False)
    assert sorted(tenants.pairs()) == [("contoso", "acme-erp"), ("northwind", "acme-erp")]


def test_production_client_secret_files_are_where_the_tenants_file_says(production: Objects) -> None:
    tenants = yaml.safe_load(find(production, "ConfigMap", "conduit-tenants")["data"]["tenants.yaml"])
    secret_file = Path(tenants["tenants"]["northwind"]["providers"]["acme-erp"]["client_secret"]["file"])
    for component in ("proxy", "importer", "scheduler"):
        c = container(production, component)
        pod = find(production, "Deployment", f"conduit-{component}")["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in pod["volumes"]}
        (mount,) = [m for m in c["volumeMounts"] if Path(m["mountPath"]) == secret_file.parent]
        assert volumes[mount["name"]]["secret"]["secretName"] == "conduit-client-secrets"
        contoso = tenants["tenants"]["contoso"]["providers"]["acme-erp"]["client_secret"]["env"]
        assert "secretKeyRef" in env(c)[contoso]["valueFrom"]


def test_pods_roll_when_the_tenants_change(render: Callable[..., Objects], default: Objects) -> None:
    changed = render("--set-json", 'tenants.config={"providers": {}, "tenants": {"acme": {"providers": {}}}}')
    for component in ("proxy", "importer", "scheduler"):
        before = find(default, "Deployment", f"conduit-{component}")["spec"]["template"]["metadata"]["annotations"]
        after = find(changed, "Deployment", f"conduit-{component}")["spec"]["template"]["metadata"]["annotations"]
        assert before["checksum/tenants"] != after["checksum/tenants"], component


def test_importers_reach_the_proxy_through_its_service(objects: Objects) -> None:
    service = find(objects, "Service", "conduit-proxy")
    url = env(container(objects, "importer"))["CONDUIT_PROXY_URL"]["value"]
    assert url == f"http://{service['metadata']['name']}:{service['spec']['ports'][0]['port']}"


def test_image_follows_app_version_or_digest(default: Objects, production: Objects) -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert container(default, "proxy")["image"] == f"registry.example.com/conduit:{chart['appVersion']}"
    digest = yaml.safe_load(PRODUCTION.read_text())["image"]["digest"]
    for component in ("proxy", "importer", "scheduler", "migrate"):
        assert container(production, component)["image"] == f"registry.example.com/platform/conduit@{digest}"


def test_every_command_is_a_conduit_subcommand(objects: Objects) -> None:
    for component in ("proxy", "importer", "scheduler", "migrate"):
        assert container(objects, component)["args"] == [component]


# --- values.yaml is documented ----------------------------------------------------


def undocumented_values(text: str) -> list[str]:
    """Keys with no comment above them, unless they group keys that all have one (recursively)."""
    lines = text.splitlines()
    documented: dict[str, bool] = {}  # dotted path -> has a comment, in file order
    stack: list[tuple[int, str]] = []
    for number, line in enumerate(lines):
        match = re.match(r"^( *)([A-Za-z0-9_.\-/\"]+):(\s|$)", line)
        if not match:
            continue
        indent, key = len(match.group(1)), match.group(2)
        while stack and stack[-1][0] >= indent:
            stack.pop()
        stack.append((indent, key))
        above = next((lines[i].strip() for i in range(number - 1, -1, -1) if lines[i].strip()), "")
        documented[".".join(name for _, name in stack)] = above.startswith("#") or " #" in line

    def children(path: str) -> list[str]:
        return [p for p in documented if p.startswith(path + ".") and "." not in p[len(path) + 1 :]]

    def missing(path: str) -> list[str]:
        if documented[path]:
            return []  # a comment on a key documents everything below it
        below = children(path)
        found = [m for child in below for m in missing(child)]
        return found if below else [path]

    return [m for path in documented if "." not in path for m in missing(path)]


def test_values_yaml_documents_every_value() -> None:
    assert undocumented_values((CHART / "values.yaml").read_text()) == []


def test_the_documentation_check_notices_a_bare_value() -> None:
    text = "# documented\na: 1\nsection:\n  # documented\n  b: 2\n  c: 3\n  group:\n    # documented\n    d: 4\n"
    assert undocumented_values(text) == ["section.c"]
    assert undocumented_values("bare: 1\n# documented\nblock:\n  free: form\n") == ["bare"]


# --- every setting of every settings class ------------------------------------------

# Set by the chart from its own values (URLs, Secrets, ports, mounts) rather than from a config map.
CHART_MANAGED = {
    "redis_url",
    "database_url",
    "token_key",
    "token_key_old",
    "tenants_file",
    "log_level",
    "proxy_url",
    "proxy_port",
    "proxy_upstream_ca_file",
    "redis_ca_file",
    "importer_http_port",
    "scheduler_http_port",
}


def settings_classes() -> dict[str, type[Any]]:
    from services.auth_proxy.settings import ProxySettings
    from services.importer.settings import ImporterSettings
    from services.scheduler.settings import SchedulerSettings

    return {"proxy": ProxySettings, "importer": ImporterSettings, "scheduler": SchedulerSettings}


def setting_env(settings: type[Any]) -> dict[str, str]:
    """Each field of a pydantic-settings class and the variable it reads (env_prefix + name, upper case)."""
    prefix = settings.model_config["env_prefix"]
    return {name: f"{prefix}{name}".upper() for name in settings.model_fields}


@pytest.mark.parametrize("component", ["proxy", "importer", "scheduler"])
def test_the_chart_sets_every_setting_of_the_services_settings_class(objects: Objects, component: str) -> None:
    rendered = env(container(objects, component))
    fields = setting_env(settings_classes()[component])
    missing = [variable for name, variable in fields.items() if variable not in rendered and not on_demand(name)]
    assert not missing, f"{component}: settings the chart cannot set: {sorted(missing)}"


def on_demand(name: str) -> bool:
    # Rendered only when their value is given: the old token key (optional Secret key is always rendered),
    # the upstream CA (a ConfigMap), and settings whose default is null (unset).
    return name in ("proxy_upstream_ca_file", "redis_ca_file") or (
        name not in CHART_MANAGED and name in null_defaults()
    )


def null_defaults() -> set[str]:
    found = set()
    for group in config_groups(values()).values():
        found |= {name for name, value in group.items() if value is None}
    return found


def config_groups(chart_values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{prefix: {field name: value}} for every settings map in the values, keyed the way the template keys them."""
    groups = {
        "CONDUIT_": chart_values["config"],
        "CONDUIT_PROXY_": chart_values["proxy"]["config"],
        "CONDUIT_IMPORTER_": chart_values["importer"]["config"],
        "CONDUIT_SCHEDULER_": chart_values["scheduler"]["config"],
        "CONDUIT_CONSOLE_": chart_values["console"]["config"],
    }
    return {
        prefix: {f"{prefix[len('CONDUIT_') :]}{snake(key)}".lower(): value for key, value in group.items()}
        for prefix, group in groups.items()
    }


def snake(key: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", key).lower()


@pytest.mark.parametrize("component", ["proxy", "importer", "scheduler"])
def test_the_charts_settings_defaults_are_the_applications_defaults(
    default: Objects, component: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_classes()[component]
    rendered = env(container(default, component))
    for variable in [name for name in os.environ if name.startswith("CONDUIT_")]:
        monkeypatch.delenv(variable)
    application = settings()
    fields = setting_env(settings)
    for name, variable in fields.items():
        if name not in CHART_MANAGED and variable in rendered:
            monkeypatch.setenv(variable, rendered[variable]["value"])
    from_chart = settings()
    differ = {
        fields[name]: (getattr(from_chart, name), getattr(application, name))
        for name in fields
        if name not in CHART_MANAGED and getattr(from_chart, name) != getattr(application, name)
    }
    assert not differ, f"chart default vs application default: {differ}"


# Rendered only when the way of signing in they belong to is configured (OIDC, a read-only token).
CONSOLE_ON_DEMAND = {
    "console_token",
    "console_readonly_token",
    "console_oidc_issuer",
    "console_oidc_client_id",
    "console_oidc_client_secret",
    "console_allowed_groups",
    "console_allowed_emails",
    "console_admin_groups",
    "console_admin_emails",
}


def console_settings() -> type[Any]:
    from services.console.settings import ConsoleSettings

    return ConsoleSettings


def test_the_chart_sets_every_setting_of_the_consoles_settings_class(render: Callable[..., Objects]) -> None:
    objects = render("--set", "console.enabled=true", "--set", "console.existingSecret=conduit-console")
    rendered = env(container(objects, "console"))
    fields = setting_env(console_settings())
    missing = [
        variable
        for name, variable in fields.items()
        if variable not in rendered and not on_demand(name) and name not in CONSOLE_ON_DEMAND
    ]
    assert not missing, f"console: settings the chart cannot set: {sorted(missing)}"


def test_the_consoles_chart_defaults_are_the_applications_defaults(
    render: Callable[..., Objects], monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = render("--set", "console.enabled=true", "--set", "console.existingSecret=conduit-console")
    rendered = env(container(objects, "console"))
    for variable in [name for name in os.environ if name.startswith("CONDUIT_")]:
        monkeypatch.delenv(variable)
    monkeypatch.setenv("CONDUIT_CONSOLE_TOKEN", "a-token-for-the-test")
    monkeypatch.setenv("CONDUIT_TOKEN_KEY", Fernet.generate_key().decode())  # sessions are sealed under it
    settings = console_settings()
    application = settings()
    fields = setting_env(settings)
    for name, variable in fields.items():
        if name not in CHART_MANAGED and "value" in rendered.get(variable, {}):
            monkeypatch.setenv(variable, rendered[variable]["value"])
    from_chart = settings()
    differ = {
        fields[name]: (getattr(from_chart, name), getattr(application, name))
        for name in fields
        if getattr(from_chart, name) != getattr(application, name)
    }
    assert not differ, f"chart default vs application default: {differ}"


def test_every_settings_map_key_is_a_real_setting() -> None:
    classes = [*settings_classes().values(), console_settings()]
    known = {name for settings in classes for name in settings.model_fields}
    for prefix, group in config_groups(values()).items():
        unknown = set(group) - known
        assert not unknown, f"{prefix}: values keys that no settings class reads: {sorted(unknown)}"


def test_settings_values_render_as_the_application_reads_them(render: Callable[..., Objects]) -> None:
    objects = render(
        "--set-json",
        'importer.config={"maxCsvBytes": 21474836480, "providerRates": {"demo": 20}, "tempDir": "/spool"}',
        "--set-json",
        'proxy.config={"cacheRoutes": [{"prefix": "/reports", "ttl": 300}], "readTimeout": 2.5}',
    )
    importer, proxy = env(container(objects, "importer")), env(container(objects, "proxy"))
    assert importer["CONDUIT_IMPORTER_MAX_CSV_BYTES"]["value"] == "21474836480"
    assert json.loads(importer["CONDUIT_IMPORTER_PROVIDER_RATES"]["value"]) == {"demo": 20}
    assert importer["CONDUIT_IMPORTER_TEMP_DIR"]["value"] == "/spool"
    assert json.loads(proxy["CONDUIT_PROXY_CACHE_ROUTES"]["value"]) == [{"prefix": "/reports", "ttl": 300}]
    assert proxy["CONDUIT_PROXY_READ_TIMEOUT"]["value"] == "2.5"


def test_console_is_off_by_default(default: Objects) -> None:
    assert not [o for o in default if o["metadata"]["name"].endswith("-console")]


def test_console_renders_with_probes_service_and_network_policy(render: Callable[..., Objects]) -> None:
    objects = render("--set", "console.enabled=true", "--set", "console.existingSecret=conduit-console")
    console = container(objects, "console")
    (port,) = console["ports"]
    assert console["args"] == ["console"]
    assert console["livenessProbe"]["httpGet"] == {"path": "/health_check", "port": port["name"]}
    assert console["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port["name"]}
    token = env(console)["CONDUIT_CONSOLE_TOKEN"]["valueFrom"]["secretKeyRef"]
    assert token == {"name": "conduit-console", "key": "console-token"}
    service = find(objects, "Service", "conduit-console")
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    policy = find(objects, "NetworkPolicy", "conduit-console")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": 8083, "protocol": "TCP"}]


def test_console_without_a_way_to_sign_in_is_refused(helm: Callable[..., subprocess.CompletedProcess[str]]) -> None:
    refused = helm("template", RELEASE, str(CHART), "--set", "console.enabled=true")
    assert refused.returncode != 0 and "needs a way to sign in" in refused.stderr
