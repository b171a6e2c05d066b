#!/usr/bin/env python3
"""Offline checks of deploy/ and k8s/ (run through scripts/deploy-checks.sh).

    deploy_checks.py check --kubectl K --promtool P --compose C --nginx N [--metrics-out FILE]
    deploy_checks.py sync-rules     # rewrite k8s/base/prometheusrule.yaml from the rules file

Each check prints one line, `ok   name` or `FAIL name: why`; all checks run,
and the exit status is 1 if any failed. Needs the packages of requirements.txt.
"""

import argparse
import base64
import json
import pathlib
import re
import subprocess
import sys
import tempfile
import traceback

import dockerfile
import kubernetes_validate
import yaml
from kubernetes_validate.utils import SchemaNotFoundError

ROOT = pathlib.Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = ROOT / "k8s"
RULES = DEPLOY / "prometheus/rules/chat.rules.yml"
RULE_TESTS = DEPLOY / "prometheus/tests/chat.rules.test.yml"
DASHBOARD = DEPLOY / "grafana/dashboards/chat.json"
PROMETHEUS_RULE = K8S / "base/prometheusrule.yaml"
OVERLAYS = ["base", "overlays/dev", "overlays/prod"]
# Oldest supported (the preStop `sleep` action is on by default from 1.30) and a
# recent one. kubernetes-validate bundles these schemas, so no network.
K8S_VERSIONS = ["1.30.0", "1.33.0"]
# Groups whose kinds are CRDs: kubernetes-validate has no schema for them, so
# they are checked by structure here. Any other missing schema is a failure.
CRD_GROUPS = {"monitoring.coreos.com"}
JOBS = {"chat-gateway", "chat-persister"}
PRESTOP_MARGIN = 5  # seconds beyond preStop + DRAIN_SECONDS the gateway must get

FAILED = []


class CheckError(Exception):
    pass


def check(name):
    """Decorator: run the function as one named check, print one line."""

    def wrap(fn):
        def one_check(*args, **kwargs):
            try:
                detail = fn(*args, **kwargs)
                print(f"ok   {name}" + (f" ({detail})" if detail else ""), flush=True)
                return True
            except CheckError as e:
                print(f"FAIL {name}: {e}", flush=True)
            except Exception:  # a bug in a check, or an unexpected file shape
                print(f"FAIL {name}: unexpected error\n{traceback.format_exc()}", flush=True)
            FAILED.append(name)
            return False

        return one_check

    return wrap


def need(cond, msg):
    if not cond:
        raise CheckError(msg)


def run(cmd, **kw):
    """Runs a tool; a non-zero exit is a CheckError carrying its output."""
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if p.returncode != 0:
        out = (p.stdout + p.stderr).strip()
        raise CheckError(f"`{' '.join(map(str, cmd))}` exited {p.returncode}:\n{out}")
    return p.stdout


def load_yaml(path):
    return yaml.safe_load(pathlib.Path(path).read_text())


def rel(path):
    return pathlib.Path(path).relative_to(ROOT)


# ---------------------------------------------------------------- Dockerfiles

# Instructions BuildKit knows; its parser alone accepts any word.
INSTRUCTIONS = {
    "ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK",
    "LABEL", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
}


@check("Dockerfiles: parse, multi-stage, --locked build, distroless non-root, exec-form HEALTHCHECK/ENTRYPOINT")
def check_dockerfiles():
    for crate in ("gateway", "persister"):
        path = DEPLOY / f"{crate}.Dockerfile"
        binary = f"chat-{crate}"
        cmds = dockerfile.parse_file(str(path))
        where = rel(path)
        unknown = [c.cmd for c in cmds if c.cmd not in INSTRUCTIONS]
        need(not unknown, f"{where}: unknown instructions {unknown}")
        froms = [i for i, c in enumerate(cmds) if c.cmd == "FROM"]
        need(len(froms) >= 2, f"{where}: not multi-stage")
        builder = cmds[froms[0]].value
        need(builder[0].startswith("rust:1-bookworm") and builder[1].upper() == "AS",
             f"{where}: the first stage must be `FROM rust:1-bookworm AS …`")
        final = cmds[froms[-1]:]
        need(cmds[froms[-1]].value[0] == "gcr.io/distroless/cc-debian12:nonroot",
             f"{where}: the runtime stage must be gcr.io/distroless/cc-debian12:nonroot")
        runs = " ".join(" ".join(c.value) for c in cmds if c.cmd == "RUN")
        need(re.search(rf"cargo build --release --locked -p {binary}\b", runs),
             f"{where}: no `cargo build --release --locked -p {binary}`")
        need(any(c.cmd == "COPY" and "--from=" + builder[2] in c.flags for c in final),
             f"{where}: the runtime stage copies nothing from the builder")
        users = [c.value[0] for c in final if c.cmd == "USER"]
        need(users and users[-1].split(":")[0] in ("nonroot", "65532"),
             f"{where}: the runtime stage must end with USER nonroot (65532)")
        hc = [c for c in final if c.cmd == "HEALTHCHECK"]
        need(len(hc) == 1 and hc[0].json and hc[0].value[0] == "CMD"
             and list(hc[0].value[1:]) == [f"/usr/local/bin/{binary}", "--healthcheck"],
             f"{where}: need HEALTHCHECK CMD [\"/usr/local/bin/{binary}\", \"--healthcheck\"] (exec form: no shell)")
        for c in final:
            if c.cmd in ("CMD", "ENTRYPOINT"):
                need(c.json, f"{where}:{c.start_line}: {c.cmd} must be exec form (no shell in distroless)")
        ep = [c for c in final if c.cmd == "ENTRYPOINT"]
        need(ep and list(ep[-1].value) == [f"/usr/local/bin/{binary}"], f"{where}: ENTRYPOINT must run {binary}")
        ignore = DEPLOY / f"{crate}.Dockerfile.dockerignore"
        need(ignore.exists() and "**/target" in ignore.read_text().split(),
             f"{rel(ignore)} must exist and exclude **/target")


# ---------------------------------------------------------------- compose

def compose_model(compose_bin):
    # A clean environment: the defaults written in the file are what is checked.
    out = run([compose_bin, "-f", DEPLOY / "compose.yaml", "config", "--format", "json"],
              env={"PATH": "/usr/bin:/bin", "HOME": tempfile.gettempdir()})
    return json.loads(out)


def seconds(duration):
    """A compose duration such as `30s`, `1m30s` or `2m`, in seconds."""
    parts = re.fullmatch(r"(?:(\d+)m)?(?:(\d+)s)?", duration)
    need(parts and duration, f"cannot read duration {duration!r}")
    return int(parts[1] or 0) * 60 + int(parts[2] or 0)


def image_healthcheck(build):
    """True when the service builds from one of our Dockerfiles (they have HEALTHCHECK)."""
    return bool(build) and build.get("dockerfile", "").startswith("deploy/") and build["dockerfile"].endswith(".Dockerfile")


@check("compose.yaml: `docker compose config` accepts it; mounts, depends_on, targets consistent")
def check_compose(compose_bin):
    m = compose_model(compose_bin)
    services = m["services"]
    for name, s in services.items():
        image = s.get("image", "")
        need(":" in image and not image.endswith(":latest"), f"service {name}: image {image!r} must be pinned to a tag")
        for dep, how in (s.get("depends_on") or {}).items():
            need(dep in services, f"service {name} depends on unknown {dep}")
            if how.get("condition") == "service_healthy":
                d = services[dep]
                need(d.get("healthcheck") or image_healthcheck(d.get("build")),
                     f"{name} waits for {dep} to be healthy, but {dep} has no healthcheck")
        for v in s.get("volumes") or []:
            if v["type"] == "bind":
                need(pathlib.Path(v["source"]).exists(), f"service {name}: bind mount source {v['source']} missing")
        if s.get("build"):
            need((ROOT / s["build"]["dockerfile"]).exists(), f"service {name}: Dockerfile missing")
        for port in s.get("ports") or []:
            need(port.get("host_ip") == "127.0.0.1", f"service {name}: publish ports on 127.0.0.1 only")
    gateways = [n for n, s in services.items() if s.get("image", "").startswith("chat-gateway")]
    need(len(gateways) >= 2, "the stack must run at least two gateways")
    for g in gateways:
        env = services[g]["environment"]
        need(env.get("GATEWAY_ADDR") == "0.0.0.0:8080", f"{g}: GATEWAY_ADDR must be 0.0.0.0:8080")
        grace = seconds(services[g].get("stop_grace_period", "10s"))
        need(grace > int(env.get("DRAIN_SECONDS", 20)), f"{g}: stop_grace_period must exceed DRAIN_SECONDS")
    node_ids = [services[g]["environment"].get("NODE_ID") for g in gateways]
    need(len(set(node_ids)) == len(node_ids) and None not in node_ids, f"gateways need distinct NODE_IDs: {node_ids}")
    # Every OTLP endpoint is the collector's HTTP receiver.
    collector = load_yaml(DEPLOY / "otel/collector.yaml")
    http_port = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"].rsplit(":", 1)[1]
    for name, s in services.items():
        ep = (s.get("environment") or {}).get("OTEL_EXPORTER_OTLP_ENDPOINT")
        if ep:
            need(ep == f"http://otel-collector:{http_port}", f"{name}: OTEL endpoint {ep} is not the collector")
    # Prometheus scrapes services and ports that exist.
    prom = load_yaml(DEPLOY / "prometheus/prometheus.yml")
    jobs = {}
    for sc in prom["scrape_configs"]:
        jobs[sc["job_name"]] = [t for st in sc["static_configs"] for t in st["targets"]]
    need(set(jobs) == JOBS, f"compose scrape jobs {sorted(jobs)} must be {sorted(JOBS)} (the rules match on them)")
    need(sorted(t.split(":")[0] for t in jobs["chat-gateway"]) == sorted(gateways),
         "chat-gateway targets must be exactly the gateway services")
    for t in jobs["chat-persister"]:
        host, port = t.split(":")
        need(services.get(host, {}).get("environment", {}).get("PERSISTER_ADDR", "").endswith(":" + port),
             f"persister target {t} does not match a persister's PERSISTER_ADDR")
    # nginx balances over exactly the gateways.
    upstreams = re.findall(r"^\s*server\s+([\w.-]+):8080", (DEPLOY / "nginx/nginx.conf").read_text(), re.M)
    need(sorted(upstreams) == sorted(gateways), f"nginx upstreams {upstreams} != gateways {gateways}")
    return f"{len(services)} services"


@check("nginx.conf: `nginx -t` accepts it (upstream names mapped to 127.0.0.1)")
def check_nginx(nginx_bin):
    text = (DEPLOY / "nginx/nginx.conf").read_text()
    for needle in ("proxy_set_header Upgrade $http_upgrade", "proxy_read_timeout 3600s", "least_conn", "http_503"):
        need(needle in text, f"nginx.conf lacks `{needle}`")
    with tempfile.TemporaryDirectory() as tmp:
        # nginx resolves upstream names while testing, and the compose names
        # exist only in the stack; temp paths go to tmp instead of /var/lib/nginx.
        test = re.sub(r"^(\s*server\s+)[\w.-]+(:\d+)", r"\g<1>127.0.0.1\g<2>", text, flags=re.M)
        temps = " ".join(f"{k}_temp_path {tmp}/{k};" for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        test, n = re.subn(r"^http \{", "http {\n" + temps, test, flags=re.M)
        need(n == 1, "nginx.conf: no top-level `http {` block")
        conf = pathlib.Path(tmp) / "nginx.conf"
        conf.write_text(test)
        run([nginx_bin, "-t", "-q", "-p", tmp, "-c", conf, "-g", f"pid {tmp}/nginx.pid;"])


@check("otel/collector.yaml: pipelines reference defined components; Jaeger is a compose service")
def check_otel(compose_bin):
    c = load_yaml(DEPLOY / "otel/collector.yaml")
    for pipe, spec in c["service"]["pipelines"].items():
        for kind in ("receivers", "processors", "exporters"):
            for comp in spec.get(kind, []):
                need(comp in c.get(kind, {}), f"pipeline {pipe}: {kind[:-1]} {comp} is not defined")
    services = compose_model(compose_bin)["services"]
    for name, exp in c["exporters"].items():
        if name.startswith("otlp"):
            host = exp["endpoint"].split(":")[0]
            need(host in services, f"exporter {name} sends to {host}, not a compose service")
            need(services[host]["environment"].get("COLLECTOR_OTLP_ENABLED") == "true", "Jaeger needs COLLECTOR_OTLP_ENABLED")


@check("grafana provisioning: datasource and dashboard provider match the compose mounts")
def check_grafana_provisioning(compose_bin):
    ds = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")["datasources"]
    need(len(ds) == 1 and ds[0]["type"] == "prometheus" and ds[0]["url"] == "http://prometheus:9090",
         "one prometheus datasource at http://prometheus:9090")
    prov = load_yaml(DEPLOY / "grafana/provisioning/dashboards/chat.yml")["providers"]
    grafana = compose_model(compose_bin)["services"]["grafana"]
    targets = {v["target"]: pathlib.Path(v["source"]) for v in grafana["volumes"] if v["type"] == "bind"}
    path = prov[0]["options"]["path"]
    need(targets.get(path) == DASHBOARD.parent, f"provider path {path} is not where dashboards/ is mounted")


# ---------------------------------------------------------------- Prometheus

def rule_groups():
    return load_yaml(RULES)["groups"]


def alerts():
    return [r for g in rule_groups() for r in g["rules"] if "alert" in r]


def github_anchor(heading):
    """GitHub's heading anchor: lower case, punctuation dropped, spaces to dashes."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@check("alert rules: promtool check rules; labels, annotations, runbook anchors in k8s/README.md")
def check_rules(promtool):
    run([promtool, "check", "rules", RULES])
    readme = (K8S / "README.md").read_text()
    anchors = {github_anchor(h) for h in re.findall(r"^#+\s+(.*)$", readme, re.M)}
    anchors |= set(re.findall(r'<a (?:id|name)="([^"]+)"', readme))
    names = [a["alert"] for a in alerts()]
    need(len(names) == len(set(names)), "duplicate alert names")
    for a in alerts():
        n = a["alert"]
        need(a.get("labels", {}).get("severity") in ("critical", "warning"), f"{n}: severity must be critical or warning")
        ann = a.get("annotations", {})
        need(ann.get("summary") and ann.get("description"), f"{n}: needs summary and description")
        url = ann.get("runbook_url", "")
        need(url.startswith("k8s/README.md#"), f"{n}: runbook_url must point into k8s/README.md")
        need(url.split("#", 1)[1] in anchors, f"{n}: runbook anchor #{url.split('#', 1)[1]} is not a heading in k8s/README.md")
        for job in re.findall(r'job="([^"]+)"', a["expr"]):
            need(job in JOBS, f"{n}: matches unknown job {job}")
    return f"{len(names)} alerts"


@check("alert rules: promtool test rules; every alert has a firing and a non-firing case")
def check_rule_tests(promtool):
    run([promtool, "test", "rules", RULE_TESTS])
    firing, quiet = set(), set()
    for t in load_yaml(RULE_TESTS)["tests"]:
        for case in t.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else quiet).add(case["alertname"])
    for a in alerts():
        need(a["alert"] in firing, f"{a['alert']}: no test case where it fires")
        need(a["alert"] in quiet, f"{a['alert']}: no test case where it stays quiet")
    known = {a["alert"] for a in alerts()}
    need((firing | quiet) <= known, f"tests name unknown alerts: {sorted((firing | quiet) - known)}")


@check("prometheus.yml (compose): promtool check config")
def check_prom_compose(promtool):
    run([promtool, "check", "config", DEPLOY / "prometheus/prometheus.yml"])


@check("prometheus-k8s.yml: discovery blocks by structure, the rest by promtool check config")
def check_prom_k8s(promtool):
    # Debian's promtool is built without Kubernetes discovery and rejects the
    # field: check those blocks here, then let promtool check everything else
    # (relabel regexes and actions included) on a copy with static targets.
    path = DEPLOY / "prometheus/prometheus-k8s.yml"
    cfg = load_yaml(path)
    produced = set()
    for sc in cfg["scrape_configs"]:
        sds = sc.get("kubernetes_sd_configs")
        need(sds, f"job {sc['job_name']}: no kubernetes_sd_configs")
        for sd in sds:
            need(set(sd) <= {"role", "namespaces", "selectors", "attach_metadata"}, f"unknown SD fields {sorted(sd)}")
            need(sd["role"] in ("endpoints", "endpointslice", "service", "pod"), f"bad role {sd['role']}")
            need(sd.get("namespaces", {}).get("names") == ["chat"], "discovery must be limited to namespace chat")
        keep = [r for r in sc["relabel_configs"] if r.get("action") == "keep"]
        need(keep, "no keep rule: every endpoint in the namespace would be scraped")
        job_rules = [r for r in sc["relabel_configs"] if r.get("target_label") == "job"]
        need(job_rules == [{"source_labels": ["__meta_kubernetes_service_name"], "target_label": "job"}],
             "job must be set from the Service name")
        produced |= {alt.split(";")[0] for alt in keep[0]["regex"].strip("()").split("|")}
        sc.pop("kubernetes_sd_configs")
        sc["static_configs"] = [{"targets": ["placeholder.invalid:80"]}]
    need(produced == JOBS, f"kept Services {sorted(produced)} must be {sorted(JOBS)}")
    with tempfile.TemporaryDirectory() as tmp:
        (pathlib.Path(tmp) / "rules").mkdir()
        (pathlib.Path(tmp) / "rules" / RULES.name).write_text(RULES.read_text())
        copy_path = pathlib.Path(tmp) / "prometheus-k8s.yml"
        copy_path.write_text(yaml.safe_dump(cfg))
        run([promtool, "check", "config", copy_path])


# ---------------------------------------------------------------- PromQL, dashboard, metric names

def dashboard_exprs():
    """(where, expr) of every dashboard query, Grafana variables substituted."""
    d = json.loads(DASHBOARD.read_text())
    out = []
    for p in d["panels"]:
        for t in p.get("targets", []):
            out.append((f"panel {p['id']} ({p['title']}) {t['refId']}", t["expr"]))
    return out


def grafana_substitute(expr):
    expr = re.sub(r"\$__(rate_interval|interval|range)", "5m", expr)
    return re.sub(r"\$\{?(\w+)\}?", ".*", expr)  # only used inside =~ matchers here


@check("PromQL: every rule and dashboard expression parses (as recording rules for promtool)")
def check_promql(promtool):
    exprs = [(f"alert {a['alert']}", a["expr"]) for a in alerts()]
    exprs += [(w, grafana_substitute(e)) for w, e in dashboard_exprs()]
    rules = [{"record": f"check:expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]
    with tempfile.NamedTemporaryFile("w", suffix=".yml") as f:
        yaml.safe_dump({"groups": [{"name": "parse", "rules": rules}]}, f)
        f.flush()
        try:
            run([promtool, "check", "rules", f.name])
        except CheckError as e:
            # Name the source of each failing rule (promtool reports its record name).
            bad = {int(i) for i in re.findall(r"check:expr_(\d+)", str(e))}
            raise CheckError("; ".join(f"{exprs[i][0]}: {exprs[i][1]}" for i in sorted(bad)) or str(e))
    return f"{len(exprs)} expressions"


def catalogue():
    """name -> type, from the METRICS table of deploy/README.md."""
    rows = re.findall(r"^\| `(chat_\w+)` \| (counter|gauge|histogram) \|", (DEPLOY / "README.md").read_text(), re.M)
    return dict(rows)


def referenced_metrics():
    """Base metric names referenced by rules and dashboard (histogram suffixes stripped)."""
    cat = catalogue()
    texts = [a["expr"] for a in alerts()] + [e for _, e in dashboard_exprs()]
    texts.append(json.dumps(json.loads(DASHBOARD.read_text())["templating"]))
    names = set()
    for t in texts:
        for n in re.findall(r"\bchat_\w+", t):
            base = re.sub(r"_(bucket|sum|count)$", "", n)
            names.add(base if base != n and cat.get(base) == "histogram" else n)
    return names


@check("metric names: rules and dashboard use only the catalogue in deploy/README.md")
def check_metric_names(out):
    cat = catalogue()
    need(len(cat) >= 30, f"METRICS table of deploy/README.md not found or short ({len(cat)} rows)")
    names = referenced_metrics()
    unknown = sorted(n for n in names if n not in cat)
    need(not unknown, f"not in the catalogue: {unknown}")
    texts = [a["expr"] for a in alerts()] + [e for _, e in dashboard_exprs()]
    for t in texts:
        for n in re.findall(r"\b(chat_\w+)_bucket\b", t):
            need(cat.get(n) == "histogram", f"{n}_bucket used but {n} is not a histogram")
    if out:
        pathlib.Path(out).write_text("".join(f"{n}\n" for n in sorted(names)))
    unused = sorted(set(cat) - names)
    return f"{len(names)} referenced" + (f", written to {out}" if out else "") + (f"; not charted: {unused}" if unused else "")


@check("dashboard: chat.json is what dashboard.py generates; panels, targets, variables well-formed")
def check_dashboard():
    sys.dont_write_bytecode = True  # no __pycache__ left in deploy/grafana
    sys.path.insert(0, str(DEPLOY / "grafana"))
    import dashboard  # noqa: E402  (deploy/grafana/dashboard.py)

    need(DASHBOARD.read_text() == dashboard.render(),
         "chat.json is stale: run `python3 deploy/grafana/dashboard.py` and commit both")
    d = json.loads(DASHBOARD.read_text())
    need(d["schemaVersion"] >= 36 and d["uid"], "schemaVersion and uid")
    variables = {v["name"] for v in d["templating"]["list"]}
    need("datasource" in variables, "no datasource variable")
    ids = [p["id"] for p in d["panels"]]
    need(len(ids) == len(set(ids)), "duplicate panel ids")
    for p in d["panels"]:
        g = p["gridPos"]
        need(0 <= g["x"] and g["x"] + g["w"] <= 24, f"panel {p['id']} overflows the grid")
        if p["type"] == "row":
            continue
        need(p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, f"panel {p['id']}: datasource must be the variable")
        refs = [t["refId"] for t in p["targets"]]
        need(p["targets"] and len(refs) == len(set(refs)), f"panel {p['id']}: targets and unique refIds")
        for t in p["targets"]:
            for var in re.findall(r"\$\{?(\w+)", t["expr"]):
                need(var.startswith("__") or var in variables, f"panel {p['id']}: undefined variable ${var}")
    return f"{len(ids)} panels"


# ---------------------------------------------------------------- Kubernetes

def render(kubectl, overlay):
    out = run([kubectl, "kustomize", K8S / overlay])
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs, kind):
    return [d for d in docs if d["kind"] == kind]


def matches(selector, labels):
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def pod_templates(docs):
    return [(d, d["spec"]["template"]) for d in docs if d["kind"] in ("Deployment", "StatefulSet")]


def containers(template):
    spec = template["spec"]
    return spec.get("initContainers", []) + spec["containers"]


@check("kustomize: base and overlays render; kubernetes-validate --strict for core objects")
def check_validate(renders, template_docs):
    counts = []
    for overlay, docs in list(renders.items()) + [("base/secret.template.yaml", template_docs)]:
        crds = 0
        for d in docs:
            group = d["apiVersion"].split("/")[0] if "/" in d["apiVersion"] else ""
            crds += group in CRD_GROUPS
            for version in K8S_VERSIONS:
                try:
                    kubernetes_validate.validate(d, version, strict=True)
                except SchemaNotFoundError:
                    # Only the CRD kinds may lack a schema; they are checked below.
                    need(group in CRD_GROUPS, f"{overlay}: no schema for {d['kind']} {d['apiVersion']} (k8s {version})")
                except kubernetes_validate.ValidationError as e:
                    path = ".".join(str(p) for p in e.path)
                    raise CheckError(f"{overlay}: {d['kind']}/{d['metadata']['name']} (k8s {version}): {path}: {e.message}")
        counts.append(f"{overlay}: {len(docs) - crds} core + {crds} CRD")
    return f"k8s {', '.join(K8S_VERSIONS)}; " + "; ".join(counts)


@check("CRDs: ServiceMonitors select chat Services and ports; PrometheusRule groups == chat.rules.yml")
def check_crds(renders):
    expected_groups = rule_groups()
    for overlay, docs in renders.items():
        services = by_kind(docs, "Service")
        monitors = by_kind(docs, "ServiceMonitor")
        jobs = set()
        for sm in monitors:
            need(sm["apiVersion"] == "monitoring.coreos.com/v1", f"{overlay}: ServiceMonitor apiVersion")
            need(set(sm["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}, f"{overlay}: unexpected ServiceMonitor fields")
            sel = sm["spec"]["selector"]["matchLabels"]
            hit = [s for s in services if matches(sel, s["metadata"].get("labels", {}))]
            need(len(hit) == 1, f"{overlay}: ServiceMonitor {sm['metadata']['name']} selects {len(hit)} Services")
            ports = {p.get("name") for p in hit[0]["spec"]["ports"]}
            for ep in sm["spec"]["endpoints"]:
                need(ep["port"] in ports, f"{overlay}: ServiceMonitor {sm['metadata']['name']} port {ep['port']} not on the Service")
                need(set(ep) <= {"port", "path", "interval", "scrapeTimeout", "relabelings", "metricRelabelings", "scheme"},
                     f"{overlay}: unexpected endpoint fields {sorted(ep)}")
            jobs.add(hit[0]["metadata"]["name"])  # the operator's default job label
        need(jobs == JOBS, f"{overlay}: ServiceMonitor jobs {sorted(jobs)} must be {sorted(JOBS)}")
        rules = by_kind(docs, "PrometheusRule")
        need(len(rules) == 1, f"{overlay}: expected one PrometheusRule")
        pr = rules[0]
        need(pr["apiVersion"] == "monitoring.coreos.com/v1" and set(pr["spec"]) == {"groups"}, f"{overlay}: PrometheusRule shape")
        need(pr["spec"]["groups"] == expected_groups,
             f"{overlay}: PrometheusRule groups differ from {rel(RULES)}; run "
             "`.venv-deploy/bin/python deploy/checks/deploy_checks.py sync-rules`")


def env_of(container):
    return {e["name"]: e for e in container.get("env", [])}


@check("k8s invariants: selectors, ports, config/secret refs, restricted security, drain timing")
def check_invariants(renders, template_docs):
    template_keys = set(template_docs[0]["stringData"])
    need(all(v == "REPLACE_ME" for v in template_docs[0]["stringData"].values()), "secret template must hold placeholders only")
    for overlay, docs in renders.items():
        where = overlay
        names = {(d["kind"], d["metadata"]["name"]) for d in docs}
        need(all(d["metadata"].get("namespace") == "chat" for d in docs if d["kind"] != "Namespace"),
             f"{where}: every object must be in namespace chat")
        config = {d["metadata"]["name"]: d["data"] for d in by_kind(docs, "ConfigMap")}
        secrets = {d["metadata"]["name"]: d.get("data", d.get("stringData", {})) for d in by_kind(docs, "Secret")}
        templates = pod_templates(docs)
        for owner, tpl in templates:
            oname = f"{owner['kind']}/{owner['metadata']['name']}"
            labels = tpl["metadata"]["labels"]
            need(matches(owner["spec"]["selector"]["matchLabels"], labels), f"{where}: {oname} selector misses its pods")
            spec = tpl["spec"]
            psc = spec.get("securityContext", {})
            need(psc.get("runAsNonRoot") is True and psc.get("seccompProfile", {}).get("type") == "RuntimeDefault",
                 f"{where}: {oname}: pod must set runAsNonRoot and seccomp RuntimeDefault")
            need(spec.get("automountServiceAccountToken") is False, f"{where}: {oname}: automountServiceAccountToken: false")
            for c in containers(tpl):
                sc = c.get("securityContext", {})
                need(sc.get("allowPrivilegeEscalation") is False and sc.get("readOnlyRootFilesystem") is True
                     and sc.get("capabilities", {}).get("drop") == ["ALL"],
                     f"{where}: {oname}/{c['name']}: allowPrivilegeEscalation false, readOnlyRootFilesystem, drop ALL")
                need(":" in c["image"] and not c["image"].endswith(":latest"), f"{where}: {oname}: image {c['image']} needs a tag")
                res = c.get("resources", {})
                need(res.get("requests", {}).get("memory") and res.get("limits", {}).get("memory"),
                     f"{where}: {oname}/{c['name']}: memory request and limit")
                for ef in c.get("envFrom", []):
                    ref = ef.get("configMapRef", {}).get("name")
                    need(ref is None or ref in config, f"{where}: {oname}: ConfigMap {ref} not rendered")
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        if ref["name"] in secrets:
                            need(ref["key"] in secrets[ref["name"]], f"{where}: {oname}: secret key {ref['key']} missing")
                        else:  # the external Secret of prod: must be the templated one
                            need(ref["name"].startswith("chat-secrets") and ref["key"] in template_keys,
                                 f"{where}: {oname}: secret {ref['name']}/{ref['key']} neither rendered nor in the template")
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    port = c.get(probe, {}).get("httpGet", {}).get("port")
                    if isinstance(port, str):
                        need(port in {p.get("name") for p in c.get("ports", [])}, f"{where}: {oname}: {probe} port {port}")
        pods = [tpl["metadata"]["labels"] for _, tpl in templates]
        for s in by_kind(docs, "Service"):
            sel = s["spec"]["selector"]
            hit = [(o, t) for o, t in templates if matches(sel, t["metadata"]["labels"])]
            need(hit, f"{where}: Service {s['metadata']['name']} selects no pods")
            ports = {p.get("name") for _, t in hit for c in containers(t) for p in c.get("ports", [])}
            for p in s["spec"]["ports"]:
                need(not isinstance(p.get("targetPort"), str) or p["targetPort"] in ports,
                     f"{where}: Service {s['metadata']['name']} targetPort {p.get('targetPort')} is not a container port")
        for kind in ("PodDisruptionBudget",):
            for d in by_kind(docs, kind):
                need(any(matches(d["spec"]["selector"]["matchLabels"], p) for p in pods), f"{where}: {kind} {d['metadata']['name']} selects nothing")
        for np in by_kind(docs, "NetworkPolicy"):
            sel = np["spec"]["podSelector"].get("matchLabels")
            need(not sel or any(matches(sel, p) for p in pods), f"{where}: NetworkPolicy {np['metadata']['name']} selects no pods")
        for h in by_kind(docs, "HorizontalPodAutoscaler"):
            ref = h["spec"]["scaleTargetRef"]
            need((ref["kind"], ref["name"]) in names, f"{where}: HPA targets missing {ref['kind']}/{ref['name']}")
            need(h["spec"]["minReplicas"] >= 2, f"{where}: HPA minReplicas must be ≥ 2 (a drain needs somewhere to go)")
        for ing in by_kind(docs, "Ingress"):
            ann = ing["metadata"].get("annotations", {})
            need(int(ann.get("nginx.ingress.kubernetes.io/proxy-read-timeout", 0)) >= 3600, f"{where}: Ingress read timeout")
            for r in ing["spec"]["rules"]:
                for p in r["http"]["paths"]:
                    svc = p["backend"]["service"]
                    need(("Service", svc["name"]) in names, f"{where}: Ingress backend {svc['name']} missing")
        # The drain must fit in the grace period.
        gw = [d for d in by_kind(docs, "Deployment") if d["metadata"]["name"] == "chat-gateway"]
        need(len(gw) == 1, f"{where}: one chat-gateway Deployment")
        gw = gw[0]
        need("replicas" not in gw["spec"], f"{where}: chat-gateway replicas belong to the HPA")
        strategy = gw["spec"]["strategy"]["rollingUpdate"]
        need(strategy["maxUnavailable"] == 0 and strategy["maxSurge"] not in (0, "0%"), f"{where}: gateway rollout must surge, never go below")
        c = gw["spec"]["template"]["spec"]["containers"][0]
        cm = [config[e["configMapRef"]["name"]] for e in c["envFrom"] if "configMapRef" in e][0]
        drain = int(env_of(c).get("DRAIN_SECONDS", {}).get("value", cm.get("DRAIN_SECONDS", 20)))
        pre = c["lifecycle"]["preStop"]["sleep"]["seconds"]
        grace = gw["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        need(grace >= pre + drain + PRESTOP_MARGIN,
             f"{where}: terminationGracePeriodSeconds {grace} < preStop {pre} + DRAIN_SECONDS {drain} + {PRESTOP_MARGIN}")
        need(c["readinessProbe"]["httpGet"]["path"] == "/readyz" and c["livenessProbe"]["httpGet"]["path"] == "/healthz",
             f"{where}: gateway probes must be /readyz (readiness) and /healthz (liveness)")
        need("--dev" not in c.get("args", []), f"{where}: never --dev in Kubernetes")


@check("overlays: dev runs Redis/MongoDB in-cluster and generates its secret; prod uses managed ones, TLS, external secret")
def check_overlays(renders):
    dev, prod = renders["overlays/dev"], renders["overlays/prod"]
    # dev: StatefulSets with headless Services and volume claims; secret points at them.
    for name, port in (("redis", 6379), ("mongodb", 27017)):
        sts = [d for d in by_kind(dev, "StatefulSet") if d["metadata"]["name"] == name]
        need(sts, f"dev: no {name} StatefulSet")
        svc = [d for d in by_kind(dev, "Service") if d["metadata"]["name"] == sts[0]["spec"]["serviceName"]]
        need(svc and svc[0]["spec"].get("clusterIP") == "None", f"dev: {name} needs a headless Service")
        need(sts[0]["spec"].get("volumeClaimTemplates"), f"dev: {name} needs a volumeClaimTemplate")
        # Only gateways and persisters may reach it.
        pols = [p for p in by_kind(dev, "NetworkPolicy")
                if matches(p["spec"]["podSelector"].get("matchLabels"), sts[0]["spec"]["template"]["metadata"]["labels"])
                and p["spec"]["podSelector"].get("matchLabels")]
        need(pols, f"dev: no NetworkPolicy for {name}")
        peers = [f.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
                 for p in pols for r in p["spec"].get("ingress", []) for f in r.get("from", [])]
        need(sorted(peers) == ["chat-gateway", "chat-persister"], f"dev: {name} must admit exactly gateways and persisters, got {peers}")
    secrets = by_kind(dev, "Secret")
    need(len(secrets) == 1, "dev: one generated Secret")
    data = {k: base64.b64decode(v).decode() for k, v in secrets[0]["data"].items()}
    need(data["REDIS_URL"].startswith("redis://redis:") and data["MONGODB_URL"].startswith("mongodb://mongodb:"),
         "dev: the secret must point at the in-cluster Redis and MongoDB Services")
    need(len(data["JWT_SECRET"]) >= 16, "dev: JWT_SECRET must be at least 16 bytes")
    # prod: nothing stateful, no secret values, TLS with cert-manager.
    need(not by_kind(prod, "StatefulSet"), "prod: Redis/MongoDB must be managed, not StatefulSets")
    need(not by_kind(prod, "Secret"), "prod: no Secret may be rendered (it is created out of band)")
    ing = by_kind(prod, "Ingress")[0]
    need(ing["spec"].get("tls") and "cert-manager.io/cluster-issuer" in ing["metadata"].get("annotations", {}),
         "prod: Ingress needs tls and a cert-manager issuer annotation")
    hpa = by_kind(prod, "HorizontalPodAutoscaler")[0]
    need(hpa["spec"]["minReplicas"] >= 3, "prod: at least 3 gateways")


# ---------------------------------------------------------------- main

def prometheus_rule_text():
    doc = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "chat"},
        "spec": {"groups": rule_groups()},
    }
    head = ("# GENERATED from deploy/prometheus/rules/chat.rules.yml by\n"
            "#   .venv-deploy/bin/python deploy/checks/deploy_checks.py sync-rules\n"
            "# Do not edit: change the rules file (and its tests) instead.\n"
            "# Your Prometheus resource's ruleSelector must match this object's labels.\n")
    return head + yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    for tool in ("kubectl", "promtool", "compose", "nginx"):
        c.add_argument(f"--{tool}", required=True)
    c.add_argument("--metrics-out")
    sub.add_parser("sync-rules")
    args = ap.parse_args()
    if args.cmd == "sync-rules":
        PROMETHEUS_RULE.write_text(prometheus_rule_text())
        print(f"wrote {rel(PROMETHEUS_RULE)}")
        return 0

    check_dockerfiles()
    check_compose(args.compose)
    check_nginx(args.nginx)
    check_otel(args.compose)
    check_grafana_provisioning(args.compose)
    check_rules(args.promtool)
    check_rule_tests(args.promtool)
    check_prom_compose(args.promtool)
    check_prom_k8s(args.promtool)
    check_promql(args.promtool)
    check_metric_names(args.metrics_out)
    check_dashboard()

    renders = {}

    @check("kustomize: `kubectl kustomize` renders " + ", ".join(OVERLAYS))
    def do_render():
        for o in OVERLAYS:
            renders[o] = render(args.kubectl, o)
        return ", ".join(f"{o}: {len(d)} objects" for o, d in renders.items())

    if do_render():
        template = [d for d in yaml.safe_load_all((K8S / "base/secret.template.yaml").read_text()) if d]
        check_validate(renders, template)
        check_crds(renders)
        check_invariants(renders, template)
        check_overlays(renders)

    if FAILED:
        print(f"deploy checks: {len(FAILED)} failed: {', '.join(FAILED)}")
        return 1
    print("deploy checks: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
