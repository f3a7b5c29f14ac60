"""``loopwright deploy FILE --emit docker|kserve`` through the CLI, on a real SQLite registry.

There is no Docker engine or Kubernetes here, so the files are checked for being well formed
and for naming the right things: the manifest parses into an ``InferenceService`` whose
container probes the V2 health endpoints and carries every route's model URI; the Dockerfile
parses instruction by instruction, runs ``loopwright deploy`` in exec form and names (in ENV)
the spec its COPY brings in; the spec written beside them is the spec given.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml
from tests.serving.test_app import Store, register_store
from typer.testing import CliRunner, Result

from loopwright.cli.main import app
from loopwright.serving.deployment import Canary, DeploymentSpec
from loopwright.serving.emit import (
    DEPLOYMENT_FILE_ENV,
    EmitOptions,
    RouteTarget,
    emit_docker,
    emit_kserve,
    emit_notes,
    kubernetes_name,
)

ENV = {"COLUMNS": "250", "LOOPWRIGHT_TRACKING_URI": None, "LOOPWRIGHT_ARTIFACTS_URI": None,
       DEPLOYMENT_FILE_ENV: None}  # fmt: skip
DOCKER_INSTRUCTIONS = {"FROM", "RUN", "COPY", "ENV", "USER", "EXPOSE", "HEALTHCHECK", "CMD",
                       "WORKDIR", "LABEL"}  # fmt: skip
SPEC = """\
name: churn-api
model: churn
champion: champion
canary: {ref: 2, weight: 0.1}
shadows: ["1"]
batching: {max_batch_size: 16, max_wait_ms: 1}
log: {uri: s3://ml-logs/predictions}
"""


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    return register_store(tmp_path_factory.mktemp("emit-store"))


@pytest.fixture
def spec_file(tmp_path: Path) -> Path:
    path = tmp_path / "deployment.yaml"
    path.write_text(SPEC)
    return path


def deploy(store: Store, *args: str, **env: str | None) -> Result:
    return CliRunner().invoke(
        app, ["deploy", *args, "--tracking-uri", str(store.root)], env=ENV | env
    )


def emitted(store: Store, spec_file: Path, out: Path, *targets: str, **env: str | None) -> Path:
    flags = [arg for t in targets for arg in ("--emit", t)]
    result = deploy(store, str(spec_file), *flags, "--out", str(out), **env)
    assert result.exit_code == 0, result.output
    return out


# -- kserve ---------------------------------------------------------------------------------


def test_kserve_manifest_is_an_inference_service_over_every_route(
    store: Store, spec_file: Path, tmp_path: Path
) -> None:
    out = emitted(store, spec_file, tmp_path / "k8s", "kserve")
    isvc = yaml.safe_load((out / "inferenceservice.yaml").read_text())
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert isvc["kind"] == "InferenceService"
    assert isvc["metadata"]["name"] == "churn-api"
    assert isvc["metadata"]["annotations"]["serving.kserve.io/enable-prometheus-scraping"] == "true"
    predictor = isvc["spec"]["predictor"]
    (container,) = predictor["containers"]
    assert container["name"] == "kserve-container"
    assert container["image"] == "loopwright-churn-api:0.1.0"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["PROTOCOL"] == "v2"
    assert env["LOOPWRIGHT_MODEL_URI_CHAMPION"] == "churn@champion"
    assert env["LOOPWRIGHT_MODEL_URI_CANARY"] == "churn/2"
    assert env["LOOPWRIGHT_MODEL_URI_SHADOW_1"] == "churn/1"
    assert env["LOOPWRIGHT_TRACKING_URI"] == str(store.root.resolve())
    (port,) = container["ports"]
    assert port["containerPort"] == 8080
    ready, live = container["readinessProbe"]["httpGet"], container["livenessProbe"]["httpGet"]
    assert (ready["path"], ready["port"]) == ("/v2/health/ready", 8080)
    assert (live["path"], live["port"]) == ("/v2/health/live", 8080)
    assert set(container["resources"]) == {"requests", "limits"}
    assert container["command"] + container["args"][:1] == ["loopwright", "deploy"]

    # The spec reaches the container through the ConfigMap, where DEPLOYMENT_FILE_ENV points.
    config_map = yaml.safe_load((out / "configmap.yaml").read_text())
    (volume,) = predictor["volumes"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    (mount,) = container["volumeMounts"]
    assert mount["name"] == volume["name"]
    file_name = env[DEPLOYMENT_FILE_ENV].removeprefix(mount["mountPath"] + "/")
    served = DeploymentSpec.from_yaml(config_map["data"][file_name])
    assert served == DeploymentSpec.from_file(spec_file)


def test_a_password_goes_to_a_secret_never_into_the_files() -> None:
    spec = DeploymentSpec.from_yaml(SPEC)
    routes = [RouteTarget("champion", "churn@champion", 1, "xgboost", "sha256:" + "0" * 64)]
    options = EmitOptions(tracking_uri="postgresql+psycopg://lw:hunter2@db:5432/lw", token=True)
    files = {**emit_docker(spec, routes, options), **emit_kserve(spec, routes, options)}
    assert not [name for name, text in files.items() if "hunter2" in text]
    container = yaml.safe_load(files["inferenceservice.yaml"])["spec"]["predictor"]["containers"][0]
    secrets = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"]
               if "valueFrom" in e}  # fmt: skip
    assert secrets["LOOPWRIGHT_TRACKING_URI"] == {"name": "churn-api-loopwright",
                                                  "key": "tracking-uri"}  # fmt: skip
    assert secrets["LOOPWRIGHT_TOKEN"]["key"] == "token"
    assert "LOOPWRIGHT_SERVING_TOKEN" not in secrets  # not asked for
    install = _instructions(files["Dockerfile"])["RUN"][0]
    assert "loopwright[postgres,s3,xgboost]==" in install  # flavor, store and log URI extras
    assert any("password" in note for note in emit_notes(spec, routes, options))


def test_kubernetes_names_are_dns_labels() -> None:
    assert kubernetes_name("Churn_API v2") == "churn-api-v2"
    assert kubernetes_name("9lives") == "lw-9lives"
    assert len(kubernetes_name("x" * 80)) <= 45


# -- docker ---------------------------------------------------------------------------------


def _instructions(dockerfile: str) -> dict[str, list[str]]:
    """Instruction -> its argument strings, in order; comments and blank lines skipped."""
    found: dict[str, list[str]] = {}
    for line in dockerfile.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert not line.endswith("\\"), f"continuation lines are not expected: {line}"
        instruction, _, rest = line.partition(" ")
        assert instruction in DOCKER_INSTRUCTIONS, line
        found.setdefault(instruction, []).append(rest)
    return found


def _assignments(rest: str) -> dict[str, str]:
    return dict(pair.split("=", 1) for pair in shlex.split(rest))


def test_dockerfile_runs_the_same_server_on_the_spec_it_copies(
    store: Store, spec_file: Path, tmp_path: Path
) -> None:
    out = emitted(store, spec_file, tmp_path / "image", "docker")
    text = (out / "Dockerfile").read_text()
    found = _instructions(text)
    assert found["FROM"] == ["python:3.11-slim"]
    assert "loopwright[s3,sklearn]==0.1.0" in found["RUN"][0]  # the flavor's and the log's
    env: dict[str, str] = {}
    for rest in found["ENV"]:
        env |= _assignments(rest)
    assert env["LOOPWRIGHT_TRACKING_URI"] == str(store.root.resolve())
    (copy,) = found["COPY"]
    source, destination = [a for a in copy.split() if not a.startswith("--")]
    assert env[DEPLOYMENT_FILE_ENV] == destination
    assert DeploymentSpec.from_file(out / source) == DeploymentSpec.from_file(spec_file)
    (user,) = found["USER"]
    assert user not in {"root", "0"}
    assert found["EXPOSE"] == ["8080"]
    (healthcheck,) = found["HEALTHCHECK"]
    probe = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert probe[0] == "python" and "/v2/health/ready" in probe[-1]
    (cmd,) = found["CMD"]
    argv = json.loads(cmd)  # exec form: a JSON array, no shell
    assert argv[:2] == ["loopwright", "deploy"] and "--trusted" not in argv
    assert (out / ".dockerignore").read_text().splitlines()[-2:] == ["*", "!" + source]

    # The CMD really is a valid `loopwright deploy` command line: FILE comes from the ENV.
    again = deploy(store, *argv[2:], "--emit", "kserve", "--out", str(tmp_path / "again"),
                   **{DEPLOYMENT_FILE_ENV: str(out / source)})  # fmt: skip
    assert again.exit_code == 0, again.output


def test_emit_flags_reach_the_files(store: Store, spec_file: Path, tmp_path: Path) -> None:
    result = deploy(store, str(spec_file), "--emit", "docker", "--emit", "kserve",
                    "--out", str(tmp_path / "out"), "--image", "registry.example/churn:7",
                    "--workers", "3", "--trusted", "--pip", "lightgbm==4.5.0",
                    "--steering-token")  # fmt: skip
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        ".dockerignore", "Dockerfile", "configmap.yaml", "deployment.yaml",
        "inferenceservice.yaml"]  # fmt: skip
    found = _instructions((out / "Dockerfile").read_text())
    argv = json.loads(found["CMD"][0])
    assert argv[argv.index("--workers") + 1] == "3" and "--trusted" in argv
    assert "lightgbm==4.5.0" in found["RUN"][0]
    isvc = yaml.safe_load((out / "inferenceservice.yaml").read_text())
    container = isvc["spec"]["predictor"]["containers"][0]
    assert container["image"] == "registry.example/churn:7"
    assert container["args"] == argv[1:]
    secret_refs = {e["name"] for e in container["env"] if "valueFrom" in e}
    assert "LOOPWRIGHT_SERVING_TOKEN" in secret_refs


# -- refusals -------------------------------------------------------------------------------


def test_an_unknown_target_exits_2_naming_the_option(store: Store, spec_file: Path) -> None:
    result = deploy(store, str(spec_file), "--emit", "helm")
    assert result.exit_code == 2
    assert "--emit" in result.output and "helm" in result.output


def test_a_non_empty_directory_needs_force(store: Store, spec_file: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    refused = deploy(store, str(spec_file), "--emit", "docker", "--out", str(out))
    assert refused.exit_code == 2
    assert "--force" in refused.output and not (out / "Dockerfile").exists()
    forced = deploy(store, str(spec_file), "--emit", "docker", "--out", str(out), "--force")
    assert forced.exit_code == 0, forced.output
    assert (out / "Dockerfile").exists() and (out / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize(
    "args", [["--out", "x"], ["--image", "i:1"], ["--force"], ["--steering-token"]]
)
def test_emit_options_without_emit_are_refused(
    store: Store, spec_file: Path, args: list[str]
) -> None:
    result = deploy(store, str(spec_file), *args)
    assert result.exit_code == 2
    assert args[0] in result.output and "--emit" in result.output


def test_a_route_that_does_not_resolve_writes_nothing(store: Store, tmp_path: Path) -> None:
    spec_file = tmp_path / "bad.yaml"
    spec_file.write_text("name: churn-api\nmodel: churn\ncanary: {ref: 9, weight: 0.5}\n")
    result = deploy(store, str(spec_file), "--emit", "kserve", "--out", str(tmp_path / "out"))
    assert result.exit_code == 2
    assert "9" in result.output and not (tmp_path / "out").exists()


def test_pickled_flavors_warn_without_trusted() -> None:
    spec = DeploymentSpec.from_yaml(SPEC)
    routes = [RouteTarget("champion", "churn@champion", 1, "pyfunc", "sha256:" + "0" * 64)]
    notes = emit_notes(spec, routes, EmitOptions(tracking_uri="https://lw.example"))
    assert any("--trusted" in n for n in notes) and any("--pip" in n for n in notes)
    run = _instructions(emit_docker(spec, routes, EmitOptions())["Dockerfile"])["RUN"][0]
    assert "cloudpickle" in run


def test_a_steering_token_comes_from_the_secret_and_an_open_canary_is_pointed_out() -> None:
    spec = DeploymentSpec.from_yaml(SPEC).model_copy(
        update={"canary": Canary(ref="challenger", weight=0.1)}
    )
    routes = [RouteTarget("champion", "churn@champion", 1, "sklearn", "sha256:" + "0" * 64)]
    guarded = EmitOptions(steering_token=True)
    files = emit_kserve(spec, routes, guarded)
    container = yaml.safe_load(files["inferenceservice.yaml"])["spec"]["predictor"]["containers"][0]
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in container["env"] if "valueFrom" in e}
    assert refs["LOOPWRIGHT_SERVING_TOKEN"] == {"name": "churn-api-loopwright",
                                                "key": "serving-token"}  # fmt: skip
    assert any("steering token" in n for n in emit_notes(spec, routes, guarded))
    assert any("--steering-token" in n for n in emit_notes(spec, routes, EmitOptions()))
