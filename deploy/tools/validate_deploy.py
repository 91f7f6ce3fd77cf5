#!/usr/bin/env python3
"""Offline checks of ClusterPlex's deployment files (no container engine needed).

Run by scripts/validate-deploy.sh. Each check prints one line; any failure exits 1.
- YAML/JSON files parse;
- Swarm stack: services, images, /health checks, ClusterPlex env names, referenced config files;
- Kubernetes: kustomization resources exist, probes on /health, non-root, env names
  (the JSON-schema check runs separately with kubernetes-validate);
- Grafana dashboard: every metric we export is graphed, panel ids unique, datasource templated;
- Dockerfiles: stages, COPY sources and the scripts RUN steps call exist, runtime stages are
  non-root and health-checked, multi-arch through TARGETARCH;
- Docker mod: s6-overlay layout;
- systemd units: hardening options present.
"""

import json
import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKER = ROOT / "docker"

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)
    return ok


# ClusterPlex's own names (README of the original project) plus ours.
PMS_ENV = {"ORCHESTRATOR_URL", "PMS_IP", "TRANSCODE_OPERATING_MODE", "TRANSCODER_VERBOSE"}
ORCH_ENV = {"LISTENING_PORT", "WORKER_SELECTION_STRATEGY"}
WORKER_ENV = {"LISTENING_PORT", "STAT_CPU_INTERVAL", "ORCHESTRATOR_URL"}
SHARED_ENV = {"CLUSTERPLEX_TOKEN", "MEDIA_ROOTS", "TRANSCODE_ROOTS"}
METRICS = [
    "jobs_posted", "jobs_completed", "jobs_succeeded", "jobs_failed", "jobs_killed",
    "job_posters_active", "workers_active", "worker_load_cpu", "worker_load_tasks",
    "queue_wait_seconds", "placement_seconds", "job_duration_seconds", "queue_depth", "worker_load_rank",
]


def load_yaml_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def check_parse():
    for p in sorted(list(DEPLOY.rglob("*.yml")) + list(DEPLOY.rglob("*.yaml"))):
        try:
            load_yaml_docs(p)
            check(True, f"yaml parses: {p.relative_to(ROOT)}")
        except yaml.YAMLError as e:
            check(False, f"yaml parses: {p.relative_to(ROOT)}: {e}")
    for p in sorted(DEPLOY.rglob("*.json")):
        try:
            json.loads(p.read_text(encoding="utf-8"))
            check(True, f"json parses: {p.relative_to(ROOT)}")
        except json.JSONDecodeError as e:
            check(False, f"json parses: {p.relative_to(ROOT)}: {e}")


def env_names(env):
    if isinstance(env, dict):
        return set(env)
    if isinstance(env, list):  # compose list form "NAME=value"
        return {str(e).split("=", 1)[0] for e in env}
    return set()


def check_swarm():
    path = DEPLOY / "swarm" / "clusterplex-stack.yml"
    (stack,) = load_yaml_docs(path)
    services = stack.get("services", {})
    for name in ("plex", "plex-orchestrator", "plex-worker"):
        check(name in services, f"swarm: service {name} exists")
    for name, svc in services.items():
        check(bool(svc.get("image")), f"swarm: {name} has an image")
    # The orchestrator serves HTTP on METRICS_PORT (LISTENING_PORT is its gRPC port); the worker's
    # LISTENING_PORT is its HTTP health port.
    for name, var in (("plex-orchestrator", "METRICS_PORT"), ("plex-worker", "LISTENING_PORT")):
        svc = services.get(name, {})
        port = svc.get("environment", {}).get(var)
        test = " ".join(svc.get("healthcheck", {}).get("test", []))
        check(port is not None and f"localhost:{port}/health" in test,
              f"swarm: {name} health check on its {var} ({port})/health")
    pms = env_names(services.get("plex", {}).get("environment"))
    orch = env_names(services.get("plex-orchestrator", {}).get("environment"))
    worker = env_names(services.get("plex-worker", {}).get("environment"))
    check(PMS_ENV | {"CLUSTERPLEX_TOKEN"} <= pms, f"swarm: plex sets {sorted(PMS_ENV | {'CLUSTERPLEX_TOKEN'} - pms) or 'all'} ClusterPlex env")
    check(ORCH_ENV | {"CLUSTERPLEX_TOKEN"} <= orch, "swarm: orchestrator sets its ClusterPlex env")
    check(WORKER_ENV | SHARED_ENV <= worker, f"swarm: worker sets {sorted(WORKER_ENV | SHARED_ENV - worker) or 'all'} ClusterPlex env")
    check("DOCKER_MODS" in pms, "swarm: plex applies the ClusterPlex docker mod")
    check(services.get("plex-worker", {}).get("deploy", {}).get("mode") == "global",
          "swarm: one worker per node (mode: global)")
    for cname, cfg in stack.get("configs", {}).items():
        f = (path.parent / cfg.get("file", "")).resolve()
        check(f.is_file(), f"swarm: config {cname} file {cfg.get('file')} exists")


def check_kubernetes():
    kdir = DEPLOY / "kubernetes"
    (kust,) = load_yaml_docs(kdir / "kustomization.yaml")
    resources = kust.get("resources", [])
    for r in resources:
        check((kdir / r).is_file(), f"k8s: kustomization resource {r} exists")
    listed = {kdir / r for r in resources}
    for p in kdir.glob("*.yaml"):
        if p.name != "kustomization.yaml":
            check(p in listed, f"k8s: {p.name} is listed in kustomization.yaml")
    docs = [d for r in resources for d in load_yaml_docs(kdir / r)]
    config = {}
    for d in docs:
        if d.get("kind") in ("ConfigMap",):
            config.update(d.get("data", {}))
        if d.get("kind") == "Secret":
            config.update(d.get("stringData", {}))
    check(PMS_ENV | ORCH_ENV | WORKER_ENV | SHARED_ENV <= set(config) | {"LISTENING_PORT"},
          f"k8s: config carries the ClusterPlex env names "
          f"({sorted((PMS_ENV | ORCH_ENV | WORKER_ENV | SHARED_ENV) - set(config) - {'LISTENING_PORT'}) or 'all'})")
    for d in docs:
        if d.get("kind") != "Deployment":
            continue
        name = d["metadata"]["name"]
        spec = d["spec"]["template"]["spec"]
        for c in spec["containers"]:
            if name == "clusterplex-pms":
                continue  # the LinuxServer image runs as root and drops to PUID itself
            for probe in ("readinessProbe", "livenessProbe"):
                path = c.get(probe, {}).get("httpGet", {}).get("path")
                check(path == "/health", f"k8s: {name} {probe} on /health")
            sc = {**spec.get("securityContext", {}), **c.get("securityContext", {})}
            check(sc.get("runAsNonRoot") is True, f"k8s: {name} runs as non-root")
            check(sc.get("allowPrivilegeEscalation") is False, f"k8s: {name} forbids privilege escalation")
            var = "METRICS_PORT" if name == "clusterplex-orchestrator" else "LISTENING_PORT"
            port = next((str(e.get("value")) for e in c.get("env", []) if e["name"] == var), None)
            named = {p.get("name"): str(p["containerPort"]) for p in c.get("ports", [])}
            probe_port = c.get("livenessProbe", {}).get("httpGet", {}).get("port")
            check(port is not None and named.get(probe_port, str(probe_port)) == port,
                  f"k8s: {name} probes hit its {var} ({port})")
        sel = d["spec"]["selector"]["matchLabels"]
        labels = d["spec"]["template"]["metadata"]["labels"]
        check(all(labels.get(k) == v for k, v in sel.items()), f"k8s: {name} selector matches its pod labels")
    for d in docs:
        if d.get("kind") == "Service":
            sel = d["spec"]["selector"]
            ok = any(
                x.get("kind") == "Deployment"
                and all(x["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in sel.items())
                for x in docs
            )
            check(ok, f"k8s: service {d['metadata']['name']} selects a deployment")


def check_grafana():
    path = DEPLOY / "grafana" / "clusterplex-dashboard.json"
    dash = json.loads(path.read_text(encoding="utf-8"))
    exprs = " ".join(t.get("expr", "") for p in dash.get("panels", []) for t in p.get("targets", []))
    for m in METRICS:
        check(re.search(r"\b" + re.escape(m) + r"(?:_bucket|_sum|_count|_total|\(_total\)\?)?\b", exprs) is not None, f"grafana: metric {m} is graphed")
    # Every metric the orchestrator registers is graphed (names read from its source).
    src = ROOT / "orchestrator" / "src" / "metrics.rs"
    if src.is_file():
        exported = set(re.findall(r'register(?:\(|\(&mut registry,)\s*"([a-z_]+)"', src.read_text(encoding="utf-8")))
        exported |= set(re.findall(r'counter\(&mut registry,\s*"([a-z_]+)"', src.read_text(encoding="utf-8")))
        exported -= {"worker_protocol_mismatches"}  # an alert, not a dashboard series
        check(bool(exported), f"grafana: found the orchestrator's metric names in {src.relative_to(ROOT)}")
        for m in sorted(exported):
            check(re.search(r"\b" + re.escape(m) + r"(?:_bucket|_sum|_count|_total)?\b", exprs) is not None,
                  f"grafana: orchestrator metric {m} is graphed")
    ids = [p.get("id") for p in dash["panels"]]
    check(len(ids) == len(set(ids)), "grafana: panel ids are unique")
    check(all("gridPos" in p for p in dash["panels"]), "grafana: every panel has a position")
    names = {v["name"] for v in dash.get("templating", {}).get("list", [])}
    check("DS_PROMETHEUS" in names, "grafana: the data source is a template variable")
    labelled = [p for p in dash["panels"] if "worker_load" in json.dumps(p.get("targets"))]
    check(all("worker_name" in json.dumps(p["targets"]) for p in labelled),
          "grafana: worker load panels are labelled by worker")


def dockerfile_instructions(path):
    """(instruction, args) pairs with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in path.read_text(encoding="utf-8").splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if s.startswith("#"):
            continue
        buf += " " + s[:-1] if s.endswith("\\") else " " + s
        if not s.endswith("\\"):
            ins, _, args = buf.strip().partition(" ")
            out.append((ins.upper(), args.strip()))
            buf = ""
    return out


def check_dockerfile(path, runtime_stages):
    rel = path.relative_to(ROOT)
    ins = dockerfile_instructions(path)
    stages, current, per_stage = [], None, {}
    for i, a in ins:
        if i == "FROM":
            m = re.search(r"\bAS\s+(\S+)", a, re.I)
            current = m.group(1) if m else f"#{len(stages)}"
            stages.append(current)
            per_stage[current] = []
            base = re.sub(r"--platform=\S+\s+", "", a).split()[0]
            if base in per_stage and base != current:
                pass
        elif current:
            per_stage[current].append((i, a))
    check(len(stages) >= 2, f"{rel}: multi-stage ({len(stages)} stages)")
    check(any(a == "TARGETARCH" for i, a in ins if i == "ARG"), f"{rel}: multi-arch via ARG TARGETARCH")
    for i, a in ins:
        if i == "COPY":
            parts = [p for p in a.split() if not p.startswith("--")]
            frm = re.search(r"--from=(\S+)", a)
            if frm:
                check(frm.group(1) in stages, f"{rel}: COPY --from={frm.group(1)} names a stage")
                continue
            for src in parts[:-1]:
                check((ROOT / src).exists(), f"{rel}: COPY source {src} exists")
        if i == "RUN":
            for script in re.findall(r"(scripts/[\w./-]+\.sh)", a):
                check((ROOT / script).is_file(), f"{rel}: RUN calls {script}, which exists")
    for st in runtime_stages:
        body = per_stage.get(st)
        if not check(body is not None, f"{rel}: stage {st} exists"):
            continue
        users = [a for i, a in body if i == "USER"]
        check(bool(users) and not users[-1].startswith(("root", "0")), f"{rel}: {st} runs as non-root ({users[-1] if users else 'no USER'})")
        hc = [a for i, a in body if i == "HEALTHCHECK"]
        check(any("/health" in h for h in hc), f"{rel}: {st} has a /health HEALTHCHECK")


def check_docker():
    check_dockerfile(DOCKER / "Dockerfile", ["orchestrator", "worker", "worker-patched"])
    # Scripts the Dockerfile's build stages call must be the ones CI runs.
    text = (DOCKER / "Dockerfile").read_text(encoding="utf-8")
    for s in ("scripts/bootstrap.sh", "scripts/cross-aarch64.sh", "scripts/build-ffmpeg.sh"):
        check(s in text, f"docker/Dockerfile: build uses {s} (as CI does)")
    # ...and every script a RUN step calls is one that CI itself runs (make test / ci-platform).
    ci = "".join((ROOT / f).read_text(encoding="utf-8")
                 for f in ("Makefile", "scripts/test.sh", "scripts/ci-platform.sh") if (ROOT / f).is_file())
    for script in sorted(set(re.findall(r"(scripts/[\w./-]+\.sh)", text))):
        check(script in ci, f"docker/Dockerfile: {script} is also run by CI (Makefile or scripts/ci-platform.sh)")
    mod = DOCKER / "dockermod"
    check_dockerfile(mod / "Dockerfile", [])
    svc = mod / "root/etc/s6-overlay/s6-rc.d/init-mod-plex-clusterplex-shim"
    check((svc / "type").read_text().strip() == "oneshot", "dockermod: s6 service is a oneshot")
    up = (svc / "up").read_text().strip()
    check((mod / "root" / up.lstrip("/")).is_file(), f"dockermod: s6 up script {up} is in the mod")
    check((mod / "root/etc/s6-overlay/s6-rc.d/user/contents.d/init-mod-plex-clusterplex-shim").exists(),
          "dockermod: service is in the user bundle")
    check((mod / "root/etc/s6-overlay/s6-rc.d/init-mods-end/dependencies.d/init-mod-plex-clusterplex-shim").exists(),
          "dockermod: runs before init-mods-end (so before Plex starts)")
    check(not (mod / "root/etc/cont-init.d").exists(), "dockermod: no legacy cont-init.d (s6-overlay v3 only)")
    for f in (svc / "run", mod / "root/opt/clusterplex/install-shim.sh"):
        check(f.stat().st_mode & 0o111 != 0, f"dockermod: {f.relative_to(mod)} is executable")


def check_systemd():
    required = ["NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "DynamicUser=yes",
                "CapabilityBoundingSet=", "RestrictAddressFamilies=", "SystemCallFilter=@system-service",
                "Restart=on-failure", "EnvironmentFile=/etc/clusterplex/"]
    for unit in sorted((DEPLOY / "systemd").glob("*.service")):
        text = unit.read_text(encoding="utf-8")
        for r in required:
            check(r in text, f"systemd: {unit.name} has {r}")
    env = (DEPLOY / "systemd" / "worker.env").read_text(encoding="utf-8")
    names = set(re.findall(r"^([A-Z_]+)=", env, re.M))
    check(WORKER_ENV | SHARED_ENV <= names, "systemd: worker.env sets the ClusterPlex worker env names")


GENERIC_ENV = {"TZ", "RUST_LOG", "LD_LIBRARY_PATH", "NVIDIA_DRIVER_CAPABILITIES", "NVIDIA_VISIBLE_DEVICES"}


def flags_env(crate):
    """Env names the crate's clap flags accept (`env = "NAME"`), or None if it has none yet."""
    texts = [f.read_text(encoding="utf-8") for f in (ROOT / crate / "src").rglob("*.rs")]
    # The orchestrator connection flags are declared once in clusterplex-core and flattened
    # into each client CLI (`#[command(flatten)] conn: OrchestratorConn`).
    if any("OrchestratorConn" in t for t in texts):
        texts.append((ROOT / "clusterplex-core" / "src" / "conn.rs").read_text(encoding="utf-8"))
    names = set()
    for t in texts:
        names |= set(re.findall(r'env\s*=\s*"([A-Z0-9_]+)"', t))
    return names or None


def check_env_matches_flags():
    """Every variable a deployment sets for a binary is one of that binary's flags."""
    (stack,) = load_yaml_docs(DEPLOY / "swarm" / "clusterplex-stack.yml")
    services = stack.get("services", {})
    env_files = {
        "worker": set(re.findall(r"^#?([A-Z_]+)=", (DEPLOY / "systemd" / "worker.env").read_text(), re.M)),
        "orchestrator": set(re.findall(r"^#?([A-Z_]+)=", (DEPLOY / "systemd" / "orchestrator.env").read_text(), re.M)),
    }
    k8s = {}
    for f in ("worker.yaml", "orchestrator.yaml"):
        for d in load_yaml_docs(DEPLOY / "kubernetes" / f):
            if d.get("kind") == "Deployment":
                for c in d["spec"]["template"]["spec"]["containers"]:
                    k8s[f.split(".")[0]] = {e["name"] for e in c.get("env", [])}
    for crate, svc in (("worker", "plex-worker"), ("orchestrator", "plex-orchestrator")):
        accepted = flags_env(crate)
        if accepted is None:
            print(f"note {crate}: no clap env names found yet; env cross-check skipped")
            continue
        for where, names in (("swarm", env_names(services.get(svc, {}).get("environment"))),
                             ("systemd", env_files[crate]), ("k8s", k8s.get(crate, set()))):
            unknown = sorted(names - accepted - GENERIC_ENV)
            check(not unknown, f"env: {where} {crate} sets only flags it accepts {unknown or ''}")


def main():
    check_parse()
    check_env_matches_flags()
    check_swarm()
    check_kubernetes()
    check_grafana()
    check_docker()
    check_systemd()
    print(f"{len(failures)} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
