#!/usr/bin/env python3
"""Checks deploy/ without a container engine (none on the build machines).

- every YAML file parses; Kubernetes manifests validate against the Kubernetes 1.31 schemas
  (kubernetes-validate, strict: unknown fields are errors);
- every `tacto` command line in the Dockerfile, the compose file and the manifests is one the
  real binary accepts: the subcommand exists and each --flag is in its --help;
- every TACTO_* variable set anywhere is one some command reads;
- the policy in the ConfigMap loads (`tacto simulate --policy` on no events);
- every metric the Grafana dashboard queries is one the services export.

Usage: deploy/lint.py path/to/tacto
"""
import glob
import json
import os
import re
import subprocess
import sys
import tempfile

import kubernetes_validate
import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
TACTO = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "target/debug/tacto")
errors = []


def fail(msg):
    errors.append(msg)


def help_text(args):
    out = subprocess.run([TACTO, *args, "--help"], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return out.stdout


HELP = {}


def check_command(where, args):
    """args: the arguments after `tacto`."""
    words = [a for a in args if not a.startswith("-")]
    # Subcommands are the leading words (e.g. `topics create`).
    sub = []
    for w in words:
        trial = sub + [w]
        if help_text(trial) is None:
            break
        sub = trial
        if "Commands:" not in (help_text(sub) or ""):
            break
    if not sub:
        fail(f"{where}: `tacto {' '.join(args)}`: no such subcommand")
        return
    text = HELP.setdefault(tuple(sub), help_text(sub) or "")
    for a in args:
        if a.startswith("--"):
            flag = a.split("=")[0]
            if not re.search(re.escape(flag) + r"\b", text):
                fail(f"{where}: `tacto {' '.join(sub)}` has no option {flag}")


def all_env_names():
    names = set()
    top = help_text([]) or ""
    commands = re.findall(r"^  ([a-z-]+)\s", top.split("Commands:")[-1], re.M)
    for c in commands:
        t = help_text([c]) or ""
        if "Commands:" in t:
            for s in re.findall(r"^  ([a-z-]+)\s", t.split("Commands:")[-1], re.M):
                names |= set(re.findall(r"env: (TACTO_[A-Z0-9_]+)", help_text([c, s]) or ""))
        names |= set(re.findall(r"env: (TACTO_[A-Z0-9_]+)", t))
    return names


ENV = all_env_names()


def check_env(where, mapping):
    for k in mapping or {}:
        if k.startswith("TACTO_") and k not in ENV:
            fail(f"{where}: {k} is read by no tacto command")


# --- YAML and Kubernetes -------------------------------------------------------------------
for path in sorted(glob.glob(os.path.join(HERE, "**/*.yaml"), recursive=True)):
    rel = os.path.relpath(path, ROOT)
    try:
        docs = [d for d in yaml.safe_load_all(open(path)) if d]
    except yaml.YAMLError as e:
        fail(f"{rel}: {e}")
        continue
    if "/k8s/" not in path or rel.endswith("kustomization.yaml"):
        continue
    for d in docs:
        try:
            kubernetes_validate.validate(d, "1.31", strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f"{rel}: {d.get('kind')} {d.get('metadata', {}).get('name')}: {e.message} at {list(e.path)}")
        spec = d.get("spec", {})
        pod = spec.get("template", {}).get("spec", {})
        for c in pod.get("containers", []):
            check_command(f"{rel}: {c['name']}", c.get("args", []))
        if d.get("kind") in ("ConfigMap", "Secret"):
            check_env(rel, d.get("data") or d.get("stringData"))
        if d.get("kind") == "ConfigMap" and "policy.toml" in (d.get("data") or {}):
            with tempfile.TemporaryDirectory() as t:
                pol = os.path.join(t, "policy.toml")
                ev = os.path.join(t, "events.jsonl")
                open(pol, "w").write(d["data"]["policy.toml"])
                open(ev, "w").write("")
                out = subprocess.run([TACTO, "simulate", "--policy", pol, "--events", ev,
                                      "--out", os.path.join(t, "out.jsonl")],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    fail(f"{rel}: the policy does not load: {out.stderr.strip()}")
    kust = os.path.join(os.path.dirname(path), "kustomization.yaml")
    if "/k8s/" in path and os.path.exists(kust) and not rel.endswith("kustomization.yaml"):
        listed = yaml.safe_load(open(kust)).get("resources", [])
        if os.path.basename(path) not in listed:
            fail(f"{rel}: not listed in kustomization.yaml")

# --- compose ---------------------------------------------------------------------------------
compose = yaml.safe_load(open(os.path.join(HERE, "compose.yaml")))
for name, svc in compose["services"].items():
    if svc.get("image", "").startswith("tacto") or "build" in svc:
        check_command(f"compose {name}", svc.get("command", []))
        check_env(f"compose {name}", svc.get("environment"))

# --- Dockerfile ------------------------------------------------------------------------------
docker = open(os.path.join(HERE, "Dockerfile")).read()
for stage in ("AS build", "AS run"):
    if stage not in docker:
        fail(f"Dockerfile: no stage `{stage}`")
if "COPY --from=build" not in docker:
    fail("Dockerfile: the run stage copies nothing from the build stage")
cmd = re.search(r"^CMD (\[.*\])", docker, re.M)
if cmd:
    check_command("Dockerfile CMD", json.loads(cmd.group(1)))
for f in re.findall(r"^COPY (?!--from)(\S+)", docker, re.M):
    if not os.path.exists(os.path.join(ROOT, f)):
        fail(f"Dockerfile: COPY {f}: no such path")

# --- Grafana ---------------------------------------------------------------------------------
metrics_rs = open(os.path.join(ROOT, "crates/tacto-telemetry/src/metrics.rs")).read()
exported = {"tacto_" + m for m in re.findall(r'register\(\s*"([a-z_]+)"', metrics_rs)}
dash = json.load(open(os.path.join(HERE, "grafana/tacto.json")))
for p in dash["panels"]:
    for t in p["targets"]:
        for m in re.findall(r"\btacto_[a-z_]+", t["expr"]):
            base = re.sub(r"_(total|bucket|sum|count)$", "", m)
            if base not in exported:
                fail(f"grafana/tacto.json: panel {p['title']!r} queries {m}, which no service exports")

if errors:
    print("deploy/ lint failed:")
    for e in errors:
        print("  " + e)
    sys.exit(1)
print(f"deploy/ lint: ok ({len(ENV)} TACTO_* variables known)")
