#!/usr/bin/env python3
"""Checks the deployment files against the server they deploy.

* Kubernetes: renders every overlay under deploy/kubernetes/overlays (with `kubectl kustomize`
  or `kustomize build` when installed, and always with the small built-in renderer below, which
  must agree with them), then checks each rendered set: YAML parses; kind/apiVersion/
  metadata.name everywhere; the container port is 8080 = Service targetPort = SWITCHYARD_PORT;
  startup/liveness probes hit /health and readiness /ready on that port; every SWITCHYARD_* name
  in the ConfigMap or the Deployment is one the binary reads; the HPA's metric maps (through the
  prometheus-adapter rule) to a gauge the server exports; terminationGracePeriodSeconds exceeds
  preStop sleep + SWITCHYARD_DRAIN_TIMEOUT; the image is set by the overlay (cuda for GPU
  requests).
* Containers: Dockerfile.cpu and Dockerfile.cuda build with scripts/build-release.sh, which
  builds with `cargo build --release --locked -p switchyard`; both copy the binary from the
  directory they passed to it, set only variables the binary reads, listen on 8080, check
  /health, run as a non-root user with the model cache as a VOLUME at SWITCHYARD_CACHE.

Usage: python3 tests/deploy_test.py [path/to/switchyard]   (PyYAML needed)
With a built binary (argument, or target/release/switchyard), the accepted variable names come
from `switchyard serve --help` as well as from the sources.
"""

import copy
import glob
import os
import re
import shutil
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
K8S = os.path.join(ROOT, "deploy", "kubernetes")
PORT = 8080
FAILURES = []


def check(cond, msg):
    if not cond:
        FAILURES.append(msg)
    return cond


# --------------------------------------------------------------------------------------------
# What the binary accepts and exports
# --------------------------------------------------------------------------------------------


def accepted_env_names(binary):
    """SWITCHYARD_* variables the binary reads: clap `env = "..."` attributes and direct
    env::var/var_os/EnvFilter::try_from_env reads in the crates' sources (plus `serve --help`)."""
    names = set()
    for path in glob.glob(os.path.join(ROOT, "crates", "*", "src", "**", "*.rs"), recursive=True):
        src = open(path, encoding="utf-8").read()
        names.update(re.findall(r'\benv\s*=\s*"(SWITCHYARD_[A-Z0-9_]+)"', src))
        names.update(re.findall(r'(?:var|var_os|try_from_env)\(\s*"(SWITCHYARD_[A-Z0-9_]+)"', src))
    check("SWITCHYARD_PORT" in names, "could not find the SWITCHYARD_* names in the sources")
    if binary and os.access(binary, os.X_OK):
        out = subprocess.run([binary, "serve", "--help"], capture_output=True, text=True, check=True)
        from_help = set(re.findall(r"\[env: (SWITCHYARD_[A-Z0-9_]+)", out.stdout))
        check(from_help, "`switchyard serve --help` lists no [env: ...] names")
        check(from_help <= names, f"--help names missing from the source scan: {from_help - names}")
        names |= from_help
        print(f"deploy_test: env names from {binary} serve --help and the sources ({len(names)})")
    else:
        print(f"deploy_test: env names from the sources ({len(names)}; no binary built)")
    return names


def server_metrics():
    """Metric names the server exports (without the `switchyard:` prefix)."""
    src = open(os.path.join(ROOT, "crates", "http", "src", "metrics.rs"), encoding="utf-8").read()
    names = set(re.findall(r'\bone\(\s*"([a-z_]+)"', src))
    names |= set(re.findall(r'"switchyard:([a-z_]+)', src))
    check("num_requests_waiting" in names, "metrics.rs: num_requests_waiting not found")
    return names


def adapter_metric_map(exported):
    """HPA-visible name -> server metric, by applying the prometheus-adapter rules."""
    values = yaml.safe_load(open(os.path.join(K8S, "prometheus-adapter", "values.yaml")))
    out = {}
    for rule in values["rules"]["custom"]:
        series = rule["seriesQuery"]
        m = re.search(r'__name__=~"([^"]+)"', series) or re.search(r'__name__="([^"]+)"', series)
        check(m, f"adapter rule has no __name__ matcher: {series}")
        ov = rule.get("resources", {}).get("overrides", {})
        check(ov.get("pod", {}).get("resource") == "pod"
              and ov.get("namespace", {}).get("resource") == "namespace",
              "adapter rule must map the pod and namespace labels (Pods metrics)")
        for name in exported:
            full = "switchyard:" + name
            if m and re.fullmatch(m.group(1).lstrip("^").rstrip("$"), full):
                as_ = re.sub(r"\$\{(\d+)\}", r"\\\1", rule["name"]["as"])
                out[re.sub(rule["name"]["matches"], as_, full)] = name
    return out


# --------------------------------------------------------------------------------------------
# A renderer for the subset of kustomize these overlays use
# --------------------------------------------------------------------------------------------

# Strategic-merge keys of the lists we patch; other lists are replaced, as kustomize does.
MERGE_KEYS = {
    "containers": "name",
    "initContainers": "name",
    "env": "name",
    "volumes": "name",
    "volumeMounts": "name",
    "ports": "containerPort",
    "imagePullSecrets": "name",
}
SUPPORTED = {"apiVersion", "kind", "resources", "patches", "images", "labels"}


def smp(base, patch, key=None):
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            if v is None:
                out.pop(k, None)
            elif k in out:
                out[k] = smp(out[k], v, k)
            else:
                out[k] = copy.deepcopy(v)
        return out
    if isinstance(base, list) and isinstance(patch, list) and key in MERGE_KEYS:
        mk = MERGE_KEYS[key]
        out = [copy.deepcopy(x) for x in base]
        for item in patch:
            idx = next((i for i, x in enumerate(out) if x.get(mk) == item.get(mk)), None)
            if idx is None:
                out.append(copy.deepcopy(item))
            else:
                out[idx] = smp(out[idx], item, None)
        return out
    return copy.deepcopy(patch)


def set_images(obj, images):
    spec = obj.get("spec", {}).get("template", {}).get("spec", {})
    for c in spec.get("containers", []) + spec.get("initContainers", []):
        name = re.split(r"[@]", c["image"])[0]
        name = name if ":" not in name.rsplit("/", 1)[-1] else name.rsplit(":", 1)[0]
        for im in images:
            if im["name"] == name:
                c["image"] = im.get("newName", name) + (":" + im["newTag"] if "newTag" in im else "")


def render_builtin(kdir):
    kfile = os.path.join(kdir, "kustomization.yaml")
    k = yaml.safe_load(open(kfile))
    unsupported = set(k) - SUPPORTED
    if unsupported:
        raise RuntimeError(f"{kfile}: the built-in renderer does not support {sorted(unsupported)}")
    objs = []
    for r in k.get("resources", []):
        p = os.path.normpath(os.path.join(kdir, r))
        if os.path.isdir(p):
            objs += render_builtin(p)
        else:
            objs += [d for d in yaml.safe_load_all(open(p)) if d]
    for pt in k.get("patches", []):
        if set(pt) != {"path"}:
            raise RuntimeError(f"{kfile}: only `patches: - path:` is supported")
        patch = yaml.safe_load(open(os.path.join(kdir, pt["path"])))
        hits = [i for i, o in enumerate(objs)
                if o["kind"] == patch["kind"] and o["metadata"]["name"] == patch["metadata"]["name"]]
        if len(hits) != 1:
            raise RuntimeError(f"{kfile}: patch {pt['path']} matches {len(hits)} resources")
        objs[hits[0]] = smp(objs[hits[0]], patch)
    for o in objs:
        set_images(o, k.get("images", []))
        for lab in k.get("labels", []):
            if lab.get("includeSelectors") or lab.get("includeTemplates"):
                raise RuntimeError(f"{kfile}: labels with includeSelectors/Templates unsupported")
            o["metadata"].setdefault("labels", {}).update(lab["pairs"])
    return objs


def render_external(kdir):
    """`kubectl kustomize` / `kustomize build` output, or None when neither is installed."""
    for cmd in (["kubectl", "kustomize", kdir], ["kustomize", "build", kdir]):
        if shutil.which(cmd[0]):
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode == 0:
                return cmd[0], [d for d in yaml.safe_load_all(r.stdout) if d]
            check(False, f"{' '.join(cmd)} failed: {r.stderr.strip()}")
            return cmd[0], None
    return None, None


def key(o):
    return (o["kind"], o["metadata"]["name"])


# --------------------------------------------------------------------------------------------
# Checks on one rendered overlay
# --------------------------------------------------------------------------------------------


def check_overlay(name, objs, env_names, metric_map):
    where = f"overlay {name}"
    for o in objs:
        check(o.get("apiVersion") and o.get("kind") and o.get("metadata", {}).get("name"),
              f"{where}: resource without apiVersion/kind/metadata.name: {str(o)[:80]}")
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], []).append(o)
    for kind in ("Deployment", "Service", "ConfigMap", "PodDisruptionBudget",
                 "HorizontalPodAutoscaler"):
        check(len(by_kind.get(kind, [])) == 1, f"{where}: expected one {kind}")
    if FAILURES and any(f.startswith(where + ": expected one") for f in FAILURES):
        return
    dep, svc = by_kind["Deployment"][0], by_kind["Service"][0]
    cm, pdb = by_kind["ConfigMap"][0], by_kind["PodDisruptionBudget"][0]
    hpa = by_kind["HorizontalPodAutoscaler"][0]
    pod = dep["spec"]["template"]["spec"]
    cms = {cm["metadata"]["name"]: cm["data"]}
    (c,) = [c for c in pod["containers"] if c["name"] == "switchyard"]
    labels = dep["spec"]["template"]["metadata"]["labels"]

    # Environment: the ConfigMap's keys and the container's env, all names the binary reads.
    env = {}
    for ef in c.get("envFrom", []):
        ref = ef["configMapRef"]["name"]
        check(ref in cms, f"{where}: envFrom references missing ConfigMap {ref}")
        env.update(cms.get(ref, {}))
    for e in c.get("env", []):
        env[e["name"]] = e.get("value")
    for n in set(env) | set(cm["data"]):
        check(n in env_names, f"{where}: {n} is not a variable switchyard reads")
    for n, v in cm["data"].items():
        check(isinstance(v, str), f"{where}: ConfigMap value of {n} must be a string, got {v!r}")

    # Ports.
    ports = {p.get("name"): p["containerPort"] for p in c["ports"]}
    check(list(ports.values()) == [PORT], f"{where}: container ports {ports} != [{PORT}]")
    check(str(env.get("SWITCHYARD_PORT", PORT)) == str(PORT),
          f"{where}: SWITCHYARD_PORT={env.get('SWITCHYARD_PORT')} != {PORT}")
    check(env.get("SWITCHYARD_HOST") == "0.0.0.0", f"{where}: SWITCHYARD_HOST must be 0.0.0.0")
    for sp in svc["spec"]["ports"]:
        tp = sp["targetPort"]
        check(ports.get(tp, tp) == PORT, f"{where}: Service targetPort {tp} is not {PORT}")
    check(all(labels.get(k) == v for k, v in svc["spec"]["selector"].items()),
          f"{where}: Service selector does not select the pods")
    check(all(labels.get(k) == v for k, v in pdb["spec"]["selector"]["matchLabels"].items()),
          f"{where}: PodDisruptionBudget does not select the pods")
    check(dep["spec"]["selector"]["matchLabels"].items() <= labels.items(),
          f"{where}: Deployment selector does not match its template")

    # Probes.
    for probe, path in (("startupProbe", "/health"), ("livenessProbe", "/health"),
                        ("readinessProbe", "/ready")):
        p = c.get(probe)
        if not check(p and "httpGet" in p, f"{where}: no httpGet {probe}"):
            continue
        check(p["httpGet"]["path"] == path, f"{where}: {probe} path {p['httpGet']['path']} != {path}")
        port = p["httpGet"]["port"]
        check(ports.get(port, port) == PORT, f"{where}: {probe} port {port} is not {PORT}")

    # Termination: preStop sleep + drain timeout < grace period.
    drain = float(env.get("SWITCHYARD_DRAIN_TIMEOUT", 30))
    pre = c.get("lifecycle", {}).get("preStop", {})
    sleep = 0.0
    if "exec" in pre:
        cmd = pre["exec"]["command"]
        check(cmd[0] == "sleep", f"{where}: preStop should sleep, is {cmd}")
        sleep = float(cmd[-1])
    elif "sleep" in pre:
        sleep = float(pre["sleep"]["seconds"])
    check(sleep > 0, f"{where}: no preStop sleep")
    grace = pod.get("terminationGracePeriodSeconds", 30)
    check(grace > drain + sleep,
          f"{where}: terminationGracePeriodSeconds {grace} <= preStop {sleep} + drain {drain}")

    # Model cache volume at SWITCHYARD_CACHE.
    mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
    vols = {v["name"] for v in pod.get("volumes", [])}
    cache = env.get("SWITCHYARD_CACHE")
    check(cache in mounts and mounts[cache] in vols, f"{where}: no volume at SWITCHYARD_CACHE={cache}")
    sc = pod.get("securityContext", {})
    check(sc.get("runAsNonRoot") is True, f"{where}: pods must set runAsNonRoot")

    # HPA: targets the Deployment and asks for a metric the server exports.
    ref = hpa["spec"]["scaleTargetRef"]
    check((ref["kind"], ref["name"]) == ("Deployment", dep["metadata"]["name"]),
          f"{where}: HPA does not target the Deployment")
    for m in hpa["spec"]["metrics"]:
        if m["type"] == "Pods":
            mn = m["pods"]["metric"]["name"]
            check(mn in metric_map, f"{where}: HPA metric {mn} is not produced by the adapter "
                  f"rules from the server's metrics (known: {sorted(metric_map)})")

    # Image: set by the overlay; GPU requests use the CUDA image, Neuron requests the Neuron one.
    img = c["image"]
    check(img != "switchyard" and ":" in img, f"{where}: image not set by the overlay: {img}")
    res = c.get("resources", {})
    wants = set(res.get("limits", {})) | set(res.get("requests", {}))
    if "nvidia.com/gpu" in wants:
        check(img.endswith(":cuda"), f"{where}: GPU pods need the cuda image, got {img}")
        check(env.get("SWITCHYARD_DEVICE", "").startswith("cuda"), f"{where}: SWITCHYARD_DEVICE")
        check("nvidia.com/gpu" in res.get("limits", {}), f"{where}: nvidia.com/gpu must be a limit")
    elif "aws.amazon.com/neuron" in wants:
        check(env.get("SWITCHYARD_DEVICE") == "neuron", f"{where}: SWITCHYARD_DEVICE must be neuron")
    else:
        check(img.endswith(":cpu"), f"{where}: CPU pods should use the cpu image, got {img}")
        check(env.get("SWITCHYARD_DEVICE") == "cpu", f"{where}: SWITCHYARD_DEVICE must be cpu")


def test_kubernetes(env_names, metric_map):
    overlays = sorted(glob.glob(os.path.join(K8S, "overlays", "*", "kustomization.yaml")))
    want = {"cpu", "aws-gpu", "aws-neuron", "azure-gpu", "gcp-gpu"}
    got = {os.path.basename(os.path.dirname(p)) for p in overlays}
    check(want <= got, f"missing overlays: {want - got}")
    for kfile in overlays:
        kdir = os.path.dirname(kfile)
        name = os.path.basename(kdir)
        try:
            mine = render_builtin(kdir)
        except Exception as e:  # noqa: BLE001 - reported as a failure
            check(False, f"overlay {name}: built-in render failed: {e}")
            continue
        tool, theirs = render_external(kdir)
        if theirs is not None:
            a = {key(o): o for o in mine}
            b = {key(o): o for o in theirs}
            check(sorted(a) == sorted(b), f"overlay {name}: {tool} renders {sorted(b)}, built-in {sorted(a)}")
            for k in a:
                check(a[k] == b.get(k), f"overlay {name}: {k} differs between {tool} and the built-in renderer")
            objs = theirs
        else:
            objs = mine
        check_overlay(name, objs, env_names, metric_map)
        print(f"deploy_test: overlay {name}: {len(objs)} resources "
              f"({tool or 'built-in renderer'}{' = built-in' if tool else ''})")


# --------------------------------------------------------------------------------------------
# Dockerfiles and the release build script
# --------------------------------------------------------------------------------------------


def dockerfile_instructions(path):
    text = open(path).read().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        s = line.strip()
        if s and not s.startswith("#"):
            ins, _, rest = s.partition(" ")
            out.append((ins.upper(), rest.strip()))
    return out


def test_dockerfiles(env_names):
    script = os.path.join(ROOT, "scripts", "build-release.sh")
    check(os.access(script, os.X_OK), "scripts/build-release.sh must exist and be executable")
    body = open(script).read()
    check(re.search(r"^cargo build --release --locked -p switchyard\b", body, re.M),
          "build-release.sh must run `cargo build --release --locked -p switchyard`")
    for name in ("Dockerfile.cpu", "Dockerfile.cuda"):
        where = name
        ins = dockerfile_instructions(os.path.join(ROOT, name))
        runs = [r for i, r in ins if i == "RUN"]
        builds = [r for r in runs if "scripts/build-release.sh" in r]
        check(len(builds) == 1, f"{where}: must RUN scripts/build-release.sh exactly once")
        check(not any(re.search(r"\bcargo (build|install --path)\b", r) for r in runs),
              f"{where}: builds the binary outside scripts/build-release.sh")
        out_dir = builds[0].split("scripts/build-release.sh", 1)[1].split()[0] if builds else None
        copies = [r for i, r in ins if i == "COPY" and "--from=builder" in r]
        check(any(f"{out_dir}/switchyard " in r + " " for r in copies),
              f"{where}: does not COPY the binary from build-release.sh's output {out_dir}")
        check(any(r.startswith("cargo chef cook") and "--release" in r and "--locked" in r
                  and "-p switchyard" in r for r in runs),
              f"{where}: dependency layer (cargo chef cook --release --locked -p switchyard) missing")
        froms = [r for i, r in ins if i == "FROM"]
        check(len(froms) >= 2, f"{where}: must be multi-stage")
        envs = {}
        for i, r in ins:
            if i == "ENV":
                envs.update(dict(re.findall(r"(\w+)=(\S+)", r)))
        for n in envs:
            if n.startswith("SWITCHYARD_"):
                check(n in env_names, f"{where}: ENV {n} is not a variable switchyard reads")
        check(envs.get("SWITCHYARD_HOST") == "0.0.0.0", f"{where}: SWITCHYARD_HOST must be 0.0.0.0")
        check(envs.get("SWITCHYARD_PORT", str(PORT)) == str(PORT), f"{where}: SWITCHYARD_PORT")
        check(("EXPOSE", str(PORT)) in ins, f"{where}: EXPOSE {PORT} missing")
        hc = [r for i, r in ins if i == "HEALTHCHECK"]
        check(hc and "/health" in hc[0], f"{where}: HEALTHCHECK on /health missing")
        users = [r for i, r in ins if i == "USER"]
        check(users and users[-1].split(":")[0] not in ("root", "0"), f"{where}: must run as non-root")
        vols = [r for i, r in ins if i == "VOLUME"]
        cache = envs.get("SWITCHYARD_CACHE")
        check(cache and any(cache in v for v in vols), f"{where}: VOLUME at SWITCHYARD_CACHE missing")
        ep = [r for i, r in ins if i == "ENTRYPOINT"]
        check(ep and ep[-1].replace(" ", "") == '["switchyard","serve"]',
              f"{where}: ENTRYPOINT must be [\"switchyard\", \"serve\"]")
        print(f"deploy_test: {name}: ok")


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target", "release", "switchyard")
    env_names = accepted_env_names(binary)
    metric_map = adapter_metric_map(server_metrics())
    test_kubernetes(env_names, metric_map)
    test_dockerfiles(env_names)
    if FAILURES:
        for f in FAILURES:
            print("FAIL:", f, file=sys.stderr)
        sys.exit(1)
    print("deploy_test: all checks passed")


if __name__ == "__main__":
    main()
