"""The serving/ deployment files, and the real tensorflow_model_server when it is installed.

The deployment checks always run: models.config must parse as TF Serving's ModelServerConfig,
docker-compose.yml must mount every file its flags name, and the Kubernetes readiness probe
command is executed against the in-process TF Serving test double. The real-server tests start
`tensorflow_model_server` with these very config files over the TEST STAND-IN model and repeat
the client checks; they skip where the binary is not on PATH (it cannot be installed on the
development machines: no Docker engine, no package carries it).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from tests.serving.conftest import MODEL_NAME, SCORE_SCALE_BY_VERSION, TRANSPORTS, make_client
from tfmmsearch.config import ExportConfig
from tests.serving.ports import free_port, stop_process
from tfmmsearch.serving.client import DEFAULT_MODEL_NAME, ServingError
from tfmmsearch.serving.rest import RestClient

SERVING_DIR = Path(__file__).resolve().parents[2] / "serving"
MODEL_SERVER = shutil.which("tensorflow_model_server")
PROMETHEUS_PATH = "/monitoring/prometheus/metrics"


# --------------------------------------------------------------------------- deployment files


def test_models_config_is_a_valid_model_server_config():
    config = text_format.Parse((SERVING_DIR / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    (model,) = config.model_config_list.config
    assert model.name == DEFAULT_MODEL_NAME == ExportConfig().model_name
    assert model.base_path == f"/models/{model.name}"
    assert model.model_platform == "tensorflow"
    assert model.model_version_policy.latest.num_versions == 2


def test_monitoring_and_batching_files_hold_the_expected_settings():
    monitoring = (SERVING_DIR / "monitoring.config").read_text()
    assert "prometheus_config" in monitoring and "enable: true" in monitoring
    assert f'path: "{PROMETHEUS_PATH}"' in monitoring
    batching = (SERVING_DIR / "batching_parameters.txt").read_text()
    for field in ("max_batch_size", "batch_timeout_micros", "num_batch_threads", "max_enqueued_batches"):
        assert f"{field} {{ value:" in batching, field
    assert "pad_variable_length_inputs: true" in batching  # rank's [B, N] candidates vary in N


def test_docker_compose_binds_localhost_and_mounts_every_file_its_flags_name():
    service = yaml.safe_load((SERVING_DIR / "docker-compose.yml").read_text())["services"]["tfserving"]
    assert service["image"].startswith("tensorflow/serving:")
    assert sorted(service["ports"]) == ["127.0.0.1:8500:8500", "127.0.0.1:8501:8501"]
    mounts = {}
    for volume in service["volumes"]:
        host, container = volume.split(":")[:2]
        mounts[container] = host
    assert mounts["/models"] == "../export"
    flags = dict(arg.split("=", 1) for arg in service["command"])
    assert flags["--enable_batching"] == "true"
    for flag in ("--model_config_file", "--batching_parameters_file", "--monitoring_config_file"):
        host_path = mounts[flags[flag]]
        assert (SERVING_DIR / host_path).is_file(), f"{flag} names {flags[flag]}, mounted from missing {host_path}"


def _kubernetes_objects() -> dict[str, dict]:
    return {doc["kind"]: doc for doc in yaml.safe_load_all((SERVING_DIR / "kubernetes.yaml").read_text())}


def test_kubernetes_service_selects_the_deployment_and_exposes_both_ports():
    objects = _kubernetes_objects()
    deployment, service = objects["Deployment"], objects["Service"]
    pod = deployment["spec"]["template"]
    assert service["spec"]["selector"].items() <= pod["metadata"]["labels"].items()
    assert {p["port"] for p in service["spec"]["ports"]} == {8500, 8501}
    (container,) = pod["spec"]["containers"]
    assert container["resources"]["requests"] and container["resources"]["limits"]
    args = dict(arg.split("=", 1) for arg in container["args"])
    assert args["--model_config_file"] == "/config/models.config"
    assert pod["metadata"]["annotations"]["prometheus.io/path"] == PROMETHEUS_PATH


def _probe_script(command: list[str], port: int, model: str = MODEL_NAME) -> str:
    assert command[:2] == ["bash", "-c"]
    return command[2].replace("8501", str(port)).replace(f"/v1/models/{MODEL_NAME}", f"/v1/models/{model}")


@pytest.mark.skipif(shutil.which("bash") is None, reason="the probe commands are bash scripts")
def test_readiness_probes_pass_only_for_an_available_model(fixture_server):
    """Runs the exact Kubernetes and docker-compose probe commands against a REST server."""
    container = _kubernetes_objects()["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    compose_test = yaml.safe_load((SERVING_DIR / "docker-compose.yml").read_text())[
        "services"]["tfserving"]["healthcheck"]["test"]
    for command in (container["readinessProbe"]["exec"]["command"], compose_test[1:]):
        ready = subprocess.run(["bash", "-c", _probe_script(command, fixture_server.rest_port)], timeout=10)
        absent = subprocess.run(["bash", "-c", _probe_script(command, fixture_server.rest_port, "absent")],
                                timeout=10)
        assert ready.returncode == 0
        assert absent.returncode != 0


# --------------------------------------------------------------------------- the real model server


@pytest.fixture(scope="module")
def real_model_server(stand_in_base_path, tmp_path_factory):
    """tensorflow_model_server started with serving/'s config files over the stand-in.

    It has no bind-address flag, so it listens on all interfaces on two ephemeral ports while the
    module runs; the tests only ever connect through 127.0.0.1.
    """
    if MODEL_SERVER is None:
        pytest.skip("tensorflow_model_server is not installed here (no TF Serving binary or Docker engine "
                    "on this machine); the tests against the in-process test double cover the protocol")
    workdir = tmp_path_factory.mktemp("model_server")
    config = workdir / "models.config"
    config.write_text((SERVING_DIR / "models.config").read_text()
                      .replace(f'"/models/{MODEL_NAME}"', f'"{stand_in_base_path}"'))
    grpc_port, rest_port = free_port(), free_port()
    log_path = workdir / "model_server.log"
    command = [
        MODEL_SERVER, f"--port={grpc_port}", f"--rest_api_port={rest_port}",
        f"--model_config_file={config}", "--enable_batching=true",
        f"--batching_parameters_file={SERVING_DIR / 'batching_parameters.txt'}",
        f"--monitoring_config_file={SERVING_DIR / 'monitoring.config'}",
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        status_client = RestClient(f"http://127.0.0.1:{rest_port}", MODEL_NAME, timeout=2)
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                pytest.fail(f"tensorflow_model_server exited with {process.returncode}:\n"
                            f"{log_path.read_text(errors='replace')[-3000:]}")
            try:
                status = status_client.model_status()
                if sum(v["state"] == "AVAILABLE" for v in status["model_version_status"]) == 2:
                    break
            except ServingError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"model not AVAILABLE after 60 s:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.5)
        yield {"rest": f"http://127.0.0.1:{rest_port}", "grpc": f"127.0.0.1:{grpc_port}", "rest_port": rest_port}
    finally:
        stop_process(process)


@pytest.mark.parametrize("kind", TRANSPORTS)
def test_real_model_server_answers_like_the_saved_model(real_model_server, client_checks, kind):
    client = make_client(kind, real_model_server["rest"], real_model_server["grpc"], timeout=30)
    try:
        client_checks.all_signatures_match_local(client)
        client_checks.image_bytes_arrive_intact(client)
        client_checks.bad_input_is_refused_then_served(client)
    finally:
        client.close()


def test_real_model_server_keeps_two_versions_and_exports_metrics(real_model_server):
    client = RestClient(real_model_server["rest"], MODEL_NAME, timeout=10)
    versions = {v["version"] for v in client.model_status()["model_version_status"]}
    assert versions == {str(v) for v in SCORE_SCALE_BY_VERSION}
    with urllib.request.urlopen(f"http://127.0.0.1:{real_model_server['rest_port']}{PROMETHEUS_PATH}",
                                timeout=10) as response:
        assert response.status == 200
        assert ":tensorflow:" in response.read().decode()
