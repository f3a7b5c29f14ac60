"""``loopwright deploy FILE --emit docker|kserve``: files that run the same server elsewhere.

Nothing here builds or applies anything: each ``emit_*`` function is pure and returns
``{file name: text}``; :func:`write_files` puts them in a directory. Both targets run the very
command this machine runs, ``loopwright deploy``, so what is served in a container is what
``loopwright deploy`` serves here (the same V2 endpoints, ``/predict``, ``/metrics``, hot swap
when an alias moves).

docker
    ``Dockerfile``: ``python:3.11-slim``, ``pip install loopwright[<extras>]`` with the extras
    the routes' flavors and the store URIs need, the spec copied to
    :data:`IMAGE_SPEC_PATH` and named by :data:`DEPLOYMENT_FILE_ENV` (``loopwright deploy``
    reads its FILE argument from that variable), the store URIs as ``LOOPWRIGHT_*`` variables,
    a non-root user, port 8080, a ``HEALTHCHECK`` on ``/v2/health/ready`` (with Python's
    ``urllib``: the slim image has no curl), ``CMD`` in exec form. ``.dockerignore`` keeps
    everything but the spec out of the build context; ``deployment.yaml`` is the spec.

kserve
    ``inferenceservice.yaml``: a ``serving.kserve.io/v1beta1`` ``InferenceService`` whose
    predictor is one custom container named ``kserve-container`` (KServe reads a custom
    predictor's protocol from its ``PROTOCOL`` variable: ``v2``), port 8080 named ``http1``
    (the name Knative expects), readiness on ``/v2/health/ready`` and liveness on
    ``/v2/health/live``, resources, the Prometheus scraping annotations, and one
    ``LOOPWRIGHT_MODEL_URI_<ROUTE>`` variable per route. ``configmap.yaml`` holds the spec,
    mounted at :data:`KSERVE_SPEC_DIR`, so changing weights is a ``kubectl apply``, not an
    image build. A store URI holding a password, and an API token, come from a Secret
    (``<name>-loopwright``, keys ``tracking-uri`` and ``token``), never from the manifest.

Neither sets ``STORAGE_URI``: loopwright resolves and downloads versions itself, through the
registry, so the storage initializer has nothing to do.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import yaml

import loopwright
from loopwright.errors import Conflict, InvalidInput

__all__ = [
    "DEPLOYMENT_FILE_ENV",
    "EMIT_TARGETS",
    "IMAGE_SPEC_PATH",
    "KSERVE_SPEC_DIR",
    "EmitOptions",
    "RouteTarget",
    "default_image",
    "emit",
    "emit_docker",
    "emit_kserve",
    "emit_notes",
    "kubernetes_name",
    "pip_requirement",
    "resolve_routes",
    "write_files",
]

EMIT_TARGETS = ("docker", "kserve")
#: ``loopwright deploy`` reads its FILE argument from this variable when it is not given.
DEPLOYMENT_FILE_ENV = "LOOPWRIGHT_DEPLOYMENT_FILE"
BASE_IMAGE = "python:3.11-slim"
PORT = 8080
APP_DIR = "/srv/loopwright"
IMAGE_SPEC_PATH = f"{APP_DIR}/deployment.yaml"
KSERVE_SPEC_DIR = "/etc/loopwright"
SPEC_FILE = "deployment.yaml"
USER_ID = 10001  # numeric, so Kubernetes' runAsNonRoot can check it without /etc/passwd
READY_PATH = "/v2/health/ready"
LIVE_PATH = "/v2/health/live"

#: The pip extra each flavor's loader needs (pyfunc and pickle need only what the model needs).
FLAVOR_EXTRAS = {"sklearn": "sklearn", "xgboost": "xgboost", "lightgbm": "lightgbm",
                 "onnx": "onnx"}  # fmt: skip
#: Flavors that load only with ``--trusted`` (unpickling runs the author's code).
TRUSTED_FLAVORS = frozenset({"pyfunc", "pickle"})
#: URI schemes whose fsspec / SQL driver comes from an extra.
SCHEME_EXTRAS = {"postgresql": "postgres", "postgres": "postgres", "s3": "s3", "gs": "gcs",
                 "gcs": "gcs"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """One route as the emitted server will follow it: ``uri`` now resolves to ``version``."""

    route: str  # champion, canary, shadow-1, shadow-2 ...
    uri: str  # what the server follows: churn@champion, churn/3
    version: int
    flavor: str
    digest: str

    @property
    def env_name(self) -> str:
        return "LOOPWRIGHT_MODEL_URI_" + re.sub(r"[^A-Z0-9]", "_", self.route.upper())


@dataclass(frozen=True, slots=True)
class EmitOptions:
    """What the files need beyond the spec: the image, the store, the server's flags."""

    image: str | None = None  # default: default_image(spec)
    tracking_uri: str | None = None
    artifacts_uri: str | None = None
    workers: int = 1
    trusted: bool = False
    packages: tuple[str, ...] = ()  # more pip requirements (a pyfunc model's own libraries)
    token: bool = False  # the server needs an API token (KServe: from the Secret)
    steering_token: bool = False  # /canary/* need LOOPWRIGHT_SERVING_TOKEN (from the Secret)
    cpu_request: str = "1"
    memory_request: str = "1Gi"
    cpu_limit: str = "2"
    memory_limit: str = "2Gi"
    labels: dict[str, str] = field(default_factory=dict)


class _Resolver(Protocol):
    def resolve(self, uri: str) -> Any: ...


def resolve_routes(registry: _Resolver, spec: Any) -> list[RouteTarget]:
    """Every route of ``spec``, resolved now (NotFound names a ref that does not resolve)."""
    refs = [("champion", spec.champion_ref)]
    if spec.canary_ref is not None:
        refs.append(("canary", spec.canary_ref))
    refs += [(f"shadow-{i}", ref) for i, ref in enumerate(spec.shadow_refs, start=1)]
    targets = []
    for route, ref in refs:
        mv = registry.resolve(ref)
        targets.append(RouteTarget(route, ref, mv.version, mv.flavor, mv.digest))
    return targets


# -- shared ---------------------------------------------------------------------------------


def kubernetes_name(name: str) -> str:
    """``name`` as a DNS-1123 label short enough for KServe's derived names (45 characters)."""
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    slug = re.sub(r"-{2,}", "-", slug)[:45].strip("-")
    if not slug or not slug[0].isalpha():
        slug = ("lw-" + slug).strip("-")
    return slug


def default_image(spec: Any) -> str:
    return f"loopwright-{kubernetes_name(spec.name)}:{loopwright.__version__}"


def pip_requirement(spec: Any, routes: Sequence[RouteTarget], options: EmitOptions) -> str:
    """``loopwright[extras]==version`` with what the flavors and store/log URIs need."""
    extras = {FLAVOR_EXTRAS[r.flavor] for r in routes if r.flavor in FLAVOR_EXTRAS}
    for uri in (options.tracking_uri, options.artifacts_uri, spec.log.uri):
        scheme = urlsplit(uri).scheme.split("+")[0] if uri and "://" in uri else ""
        if scheme in SCHEME_EXTRAS:
            extras.add(SCHEME_EXTRAS[scheme])
    suffix = f"[{','.join(sorted(extras))}]" if extras else ""
    return f"loopwright{suffix}=={loopwright.__version__}"


def _packages(routes: Sequence[RouteTarget], options: EmitOptions) -> list[str]:
    extra = ["cloudpickle"] if any(r.flavor == "pyfunc" for r in routes) else []
    return [*extra, *(p for p in options.packages if p not in extra)]


def _has_password(uri: str | None) -> bool:
    if not uri or "://" not in uri:
        return False
    try:
        return urlsplit(uri).password is not None
    except ValueError:
        return False


def _is_local(uri: str | None) -> bool:
    return uri is not None and ("://" not in uri or uri.startswith(("file://", "sqlite:")))


def _server_args(options: EmitOptions) -> list[str]:
    args = ["loopwright", "deploy", "--host", "0.0.0.0", "--port", str(PORT),
            "--workers", str(options.workers)]  # fmt: skip
    return [*args, "--trusted"] if options.trusted else args


def _store_env(options: EmitOptions) -> dict[str, str]:
    """The ``LOOPWRIGHT_*`` store variables that may be written down (no passwords)."""
    env: dict[str, str] = {}
    if options.tracking_uri and not _has_password(options.tracking_uri):
        env["LOOPWRIGHT_TRACKING_URI"] = options.tracking_uri
    if options.artifacts_uri:
        env["LOOPWRIGHT_ARTIFACTS_URI"] = options.artifacts_uri
    return env


def _describe(routes: Sequence[RouteTarget]) -> Iterable[str]:
    for r in routes:
        yield f"{r.route}: {r.uri} (now version {r.version}, {r.flavor}, {r.digest[:12]})"


def emit_notes(spec: Any, routes: Sequence[RouteTarget], options: EmitOptions) -> list[str]:
    """What the user should know before building: each a sentence, empty when all is well."""
    notes = []
    if _is_local(options.tracking_uri):
        notes.append(
            f"the tracking store {options.tracking_uri} is a local path: the container sees "
            "it only if mounted at the same path (docker run -v SRC:SRC); a team store "
            "(--tracking-uri http(s)://... or postgresql+psycopg://...) needs no mount"
        )
    if _has_password(options.tracking_uri):
        notes.append(
            "the tracking URI holds a password, so it is not written into the files: pass "
            "LOOPWRIGHT_TRACKING_URI at run time (docker run -e ...; KServe: the Secret "
            f"{kubernetes_name(spec.name)}-loopwright, key tracking-uri)"
        )
    untrusted = sorted({r.flavor for r in routes if r.flavor in TRUSTED_FLAVORS})
    if untrusted and not options.trusted:
        notes.append(
            f"routes use the {', '.join(untrusted)} flavor, which loads only with --trusted: "
            "the server will refuse them unless you emit with --trusted"
        )
    if options.steering_token:
        notes.append(
            "the canary routes need the steering token: pass LOOPWRIGHT_SERVING_TOKEN at run "
            f"time (docker run -e ...; KServe: the Secret {kubernetes_name(spec.name)}-loopwright, "
            "key serving-token); `loopwright deployments promote|rollback --token` sends it"
        )
    elif spec.canary is not None:
        notes.append(
            "the canary routes (/canary/promote, /canary/rollback) are open to whoever reaches "
            "the port: emit with --steering-token to require a token"
        )
    if untrusted and not options.packages:
        notes.append("pickled models need their own libraries in the image: add them with --pip")
    if spec.log.enabled and not spec.log.uri and not _is_local(options.tracking_uri):
        notes.append(
            "log.uri is not set and the store is not a local directory: the server will "
            "refuse to start; set log.uri (e.g. s3://bucket/predictions) in the spec"
        )
    return notes


# -- docker ---------------------------------------------------------------------------------


def emit_docker(spec: Any, routes: Sequence[RouteTarget], options: EmitOptions) -> dict[str, str]:
    """``Dockerfile``, ``.dockerignore`` and ``deployment.yaml`` (see the module docstring)."""
    image = options.image or default_image(spec)
    install = [pip_requirement(spec, routes, options), *_packages(routes, options)]
    env = {DEPLOYMENT_FILE_ENV: IMAGE_SPEC_PATH, **_store_env(options)}
    probe = (
        "import urllib.request; "
        f"urllib.request.urlopen('http://127.0.0.1:{PORT}{READY_PATH}', timeout=2)"
    )
    header = [
        f"# Generated by `loopwright deploy --emit docker` (loopwright {loopwright.__version__}).",
        f"# Deployment {spec.name!r} of model {spec.model!r}:",
        *(f"#   {line}" for line in _describe(routes)),
        f"# Build: docker build -t {image} .",
        f"# Run:   docker run --rm -p {PORT}:{PORT} {image}",
    ]
    if _has_password(options.tracking_uri):
        header.append(
            "# The tracking URI holds a password: docker run -e LOOPWRIGHT_TRACKING_URI=..."
        )
    if options.token:
        header.append("# The store needs an API token: docker run -e LOOPWRIGHT_TOKEN=...")
    labels = {
        "org.opencontainers.image.title": f"loopwright deployment {spec.name}",
        "dev.loopwright.deployment": spec.name,
        "dev.loopwright.model": spec.model,
        **{f"dev.loopwright.route.{r.route}": r.uri for r in routes},
        **options.labels,
    }
    lines = [
        *header,
        f"FROM {BASE_IMAGE}",
        "ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 "
        "PIP_DISABLE_PIP_VERSION_CHECK=1",
        f"RUN pip install {' '.join(shlex.quote(p) for p in install)}",
        f"RUN useradd --create-home --uid {USER_ID} --shell /usr/sbin/nologin loopwright "
        f"&& mkdir -p {APP_DIR} && chown {USER_ID} {APP_DIR}",
        f"WORKDIR {APP_DIR}",
        f"LABEL {_pairs(labels)}",
        f"COPY --chown={USER_ID} {SPEC_FILE} {IMAGE_SPEC_PATH}",
        f"ENV {_pairs(env)}",
        f"USER {USER_ID}",
        f"EXPOSE {PORT}",
        "HEALTHCHECK --interval=15s --timeout=3s --start-period=60s --retries=3 "
        f"CMD {json.dumps(['python', '-c', probe])}",
        f"CMD {json.dumps(_server_args(options))}",
    ]
    dockerignore = "# Only the deployment spec belongs in the build context.\n*\n!deployment.yaml\n"
    return {"Dockerfile": "\n".join(lines) + "\n", ".dockerignore": dockerignore,
            SPEC_FILE: spec.to_yaml()}  # fmt: skip


def _pairs(values: dict[str, str]) -> str:
    """``KEY="value"`` pairs for ENV / LABEL; JSON string quoting is what Docker accepts."""
    return " ".join(f"{k}={json.dumps(v)}" for k, v in values.items())


# -- kserve ---------------------------------------------------------------------------------


def emit_kserve(spec: Any, routes: Sequence[RouteTarget], options: EmitOptions) -> dict[str, str]:
    """``inferenceservice.yaml`` and ``configmap.yaml`` (see the module docstring)."""
    name = kubernetes_name(spec.name)
    config_map = f"{name}-deployment"
    secret = f"{name}-loopwright"
    labels = {"app.kubernetes.io/name": "loopwright", "app.kubernetes.io/instance": name,
              "app.kubernetes.io/version": loopwright.__version__}  # fmt: skip
    annotations = {
        "serving.kserve.io/enable-prometheus-scraping": "true",
        "prometheus.kserve.io/port": str(PORT),
        "prometheus.kserve.io/path": "/metrics",
        "loopwright.dev/deployment": spec.name,
        "loopwright.dev/model": spec.model,
        **{f"loopwright.dev/route-{r.route}": f"{r.uri} (v{r.version} at emit)" for r in routes},
    }
    env: list[dict[str, Any]] = [
        {"name": "PROTOCOL", "value": "v2"},
        {"name": DEPLOYMENT_FILE_ENV, "value": f"{KSERVE_SPEC_DIR}/{SPEC_FILE}"},
        *({"name": k, "value": v} for k, v in _store_env(options).items()),
        *({"name": r.env_name, "value": r.uri} for r in routes),
    ]
    if _has_password(options.tracking_uri):
        env.append(_secret_env("LOOPWRIGHT_TRACKING_URI", secret, "tracking-uri"))
    if options.token:
        env.append(_secret_env("LOOPWRIGHT_TOKEN", secret, "token"))
    if options.steering_token:
        env.append(_secret_env("LOOPWRIGHT_SERVING_TOKEN", secret, "serving-token"))
    container = {
        "name": "kserve-container",
        "image": options.image or default_image(spec),
        "args": _server_args(options)[1:],  # the image's CMD, spelled out: no surprises
        "command": ["loopwright"],
        "ports": [{"name": "http1", "containerPort": PORT, "protocol": "TCP"}],
        "env": env,
        "readinessProbe": _probe(READY_PATH, initial=5, period=5),
        "livenessProbe": _probe(LIVE_PATH, initial=30, period=10),
        "resources": {
            "requests": {"cpu": options.cpu_request, "memory": options.memory_request},
            "limits": {"cpu": options.cpu_limit, "memory": options.memory_limit},
        },
        "volumeMounts": [
            {"name": "deployment-spec", "mountPath": KSERVE_SPEC_DIR, "readOnly": True}
        ],
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": USER_ID,
            "allowPrivilegeEscalation": False,
        },
    }
    isvc = {
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {
            "predictor": {
                "minReplicas": 1,
                "containers": [container],
                "volumes": [{"name": "deployment-spec", "configMap": {"name": config_map}}],
            }
        },
    }
    cm = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map, "labels": labels},
        "data": {SPEC_FILE: spec.to_yaml()},
    }
    head = (
        f"# Generated by `loopwright deploy --emit kserve` (loopwright {loopwright.__version__}).\n"
        f"# kubectl apply -f configmap.yaml -f inferenceservice.yaml  (image: build it with "
        f"--emit docker)\n"
    )
    return {"inferenceservice.yaml": head + _dump(isvc), "configmap.yaml": head + _dump(cm)}


def _probe(path: str, *, initial: int, period: int) -> dict[str, Any]:
    return {"httpGet": {"path": path, "port": PORT}, "initialDelaySeconds": initial,
            "periodSeconds": period, "timeoutSeconds": 2, "failureThreshold": 3}  # fmt: skip


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the spec inside the ConfigMap) as readable ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def _dump(doc: dict[str, Any]) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100)


# -- all targets, and writing ---------------------------------------------------------------


def emit(
    targets: Iterable[str], spec: Any, routes: Sequence[RouteTarget], options: EmitOptions
) -> dict[str, str]:
    """The files of every target (``docker``, ``kserve``); an unknown one names the valid ones."""
    makers = {"docker": emit_docker, "kserve": emit_kserve}
    files: dict[str, str] = {}
    for target in targets:
        if target not in makers:
            raise InvalidInput(f"unknown --emit target {target!r}; valid: "
                               f"{', '.join(EMIT_TARGETS)}", field="--emit")  # fmt: skip
        files.update(makers[target](spec, routes, options))
    return files


def write_files(files: dict[str, str], out: Path, *, force: bool = False) -> list[Path]:
    """Write ``files`` into ``out``; a directory that exists and is not empty needs ``force``
    (which overwrites these files and leaves any other file alone)."""
    if out.exists() and not out.is_dir():
        raise InvalidInput(f"{out} exists and is not a directory", field="--out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise Conflict(f"{out} is not empty; pass --force to overwrite the generated files",
                       field="--out")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in files.items():
        path = out / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written
