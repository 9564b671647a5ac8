"""Deployment files agree with each other and with the Dockerfile."""

from __future__ import annotations

import re

import yaml

from tests.conftest import PROJECT

K8S = PROJECT / "deploy" / "kubernetes"


def dockerfile() -> str:
    return (PROJECT / "Dockerfile").read_text()


def test_dockerfile_basics() -> None:
    text = dockerfile()
    assert text.startswith("#") and "FROM python:3.11-slim" in text
    assert re.search(r"^USER 10001$", text, re.M)
    assert "EXPOSE 8000" in text and "/health/ready" in text
    # TensorFlow is installed before any source is copied
    assert text.index("pip install") < text.index("COPY app/")


def test_kubernetes_manifests_match_the_image() -> None:
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    service = yaml.safe_load((K8S / "service.yaml").read_text())
    hpa = yaml.safe_load((K8S / "hpa.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["ports"][0]["containerPort"] == 8000
    assert container["readinessProbe"]["httpGet"]["path"] == "/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health/live"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"]
    compose = yaml.safe_load((PROJECT / "docker-compose.yml").read_text())
    assert container["image"] == compose["services"]["wbc"]["image"]
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == labels
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]


def test_compose_service() -> None:
    wbc = yaml.safe_load((PROJECT / "docker-compose.yml").read_text())["services"]["wbc"]
    assert wbc["read_only"] is True and any(t.startswith("/tmp") for t in wbc["tmpfs"])
    assert wbc["healthcheck"]["test"][-1].count("/health/ready") == 1
    assert any(v.endswith(":/srv/models:ro") for v in wbc["volumes"])
    assert wbc["mem_limit"] and wbc["cpus"] and wbc["restart"]


def test_kubernetes_meets_the_restricted_pod_security_profile() -> None:
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "replicas" not in deployment["spec"]  # the HPA owns it
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    context = container["securityContext"]
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["allowPrivilegeEscalation"] is False and context["readOnlyRootFilesystem"]
    assert not container["image"].endswith(":latest")
    assert container["imagePullPolicy"] == "IfNotPresent"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["timeoutSeconds"] >= 5
    kinds = {yaml.safe_load(p.read_text())["kind"] for p in K8S.glob("*.yaml")}
    assert {"PodDisruptionBudget", "NetworkPolicy", "HorizontalPodAutoscaler"} <= kinds


def test_compose_drops_privileges() -> None:
    wbc = yaml.safe_load((PROJECT / "docker-compose.yml").read_text())["services"]["wbc"]
    assert wbc["cap_drop"] == ["ALL"]
    assert "no-new-privileges:true" in wbc["security_opt"]


def test_kubernetes_manifests_validate_against_the_api_schemas() -> None:
    """kubernetes-validate checks every manifest against the Kubernetes OpenAPI schemas it
    ships (no cluster needed); an unknown or misplaced field fails."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    cli = shutil.which("kubernetes-validate", path=str(Path(sys.executable).parent))
    if cli is None:
        if os.environ.get("CI") == "true":
            pytest.fail("kubernetes-validate is not installed")
        pytest.skip("kubernetes-validate is not installed")
    manifests = sorted(str(p) for p in K8S.glob("*.yaml"))
    out = subprocess.run([cli, "--strict", *manifests], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.count("passed") + out.stderr.count("passed") == len(manifests)


def test_the_database_comes_from_a_secret_and_is_migrated_by_a_job() -> None:
    deployment = yaml.safe_load((K8S / "deployment.yaml").read_text())
    job = yaml.safe_load((K8S / "migrate-job.yaml").read_text())
    secret = yaml.safe_load((K8S / "database-secret.yaml").read_text())
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    ref = env["WBC_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": secret["metadata"]["name"], "key": "url"}
    pod = job["spec"]["template"]["spec"]
    migrate = pod["containers"][0]
    assert migrate["command"][-4:-2] == ["db", "upgrade"]
    assert migrate["image"] == deployment["spec"]["template"]["spec"]["containers"][0]["image"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert migrate["securityContext"]["capabilities"]["drop"] == ["ALL"]
    compose = yaml.safe_load((PROJECT / "docker-compose.yml").read_text())["services"]
    assert compose["wbc"]["environment"]["WBC_DATABASE_URL"].startswith("postgresql+psycopg://")
    assert "db upgrade" in " ".join(compose["wbc"]["command"])
    assert compose["db"]["cap_drop"] == ["ALL"]
