"""Checks of deploy/kubernetes that a schema cannot express; run by deploy/check.

  policy FILE...                    hardening and wiring rules the deploy files promise
  kustomize-structure DIR...        a kustomization's shape, when no kustomize can render it
  connd-config [--extract DIR] FILE...
                                    the connection-config directories held in ConfigMaps
                                    (optionally written out, one directory per ConfigMap,
                                    for `connd check`)
  cert-manager FILE...              the cert-manager.io/v1 objects (Issuer, Certificate), read
                                    with typed models of cert-manager's CRDs: a field the
                                    model does not know, or a wrong type, fails; and every
                                    cert-manager.io/inject-ca-from names a Certificate here
  connd-commands BIN FILE...        every connd command line of the manifests (containers,
                                    probes) and systemd units (Exec*= lines): its flags parse
                                    with the built binary BIN, and every CONND_* variable it
                                    sets is one that subcommand reads

Each prints what it checked and exits 1 on the first file with a problem listed.
"""

import os
import shlex
import subprocess
import sys
import uuid

import yaml

POD_KINDS = {"Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob"}


def load_docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def pod_spec(doc):
    kind = doc.get("kind")
    if kind == "Pod":
        return doc.get("spec") or {}
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"].get("spec") or {}
    return doc["spec"]["template"].get("spec") or {}


def policy(files):
    problems = []
    pods = 0
    for path in files:
        for doc in load_docs(path):
            if doc.get("kind") not in POD_KINDS:
                continue
            pods += 1
            where = f"{path}: {doc['kind']}/{doc['metadata']['name']}"
            spec = pod_spec(doc)
            pod_sc = spec.get("securityContext") or {}
            if spec.get("automountServiceAccountToken") is not False:
                problems.append(f"{where}: automountServiceAccountToken must be false")
            containers = [("initContainers", c) for c in spec.get("initContainers") or []]
            containers += [("containers", c) for c in spec.get("containers") or []]
            for field, c in containers:
                at = f"{where}: {field}[{c['name']}]"
                sc = c.get("securityContext") or {}
                for key, want in (("runAsNonRoot", True), ("allowPrivilegeEscalation", False),
                                  ("readOnlyRootFilesystem", True)):
                    if sc.get(key, pod_sc.get(key)) is not want:
                        problems.append(f"{at}: securityContext.{key} must be {want}")
                if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
                    problems.append(f"{at}: securityContext.capabilities.drop must contain ALL")
                seccomp = sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}
                if seccomp.get("type") != "RuntimeDefault":
                    problems.append(f"{at}: seccompProfile.type must be RuntimeDefault")
                if not (c.get("resources") or {}).get("requests"):
                    problems.append(f"{at}: resources.requests must be set")
                for m in c.get("volumeMounts") or []:
                    if "subPath" in m or "subPathExpr" in m:
                        problems.append(f"{at}: volumeMount {m['name']} uses subPath, "
                                        "which never receives ConfigMap updates")
                problems += cache_rule(at, c, spec)
                if c.get("restartPolicy") == "Always":  # a native sidecar
                    for probe in ("startupProbe", "readinessProbe"):
                        cmd = ((c.get(probe) or {}).get("exec") or {}).get("command") or []
                        if cmd[:2] != ["connd", "probe"]:
                            problems.append(f"{at}: {probe} must exec `connd probe`")
    for p in problems:
        print(f"  FAIL {p}")
    print(f"  policy: {pods} pod template(s) in {len(files)} file(s), {len(problems)} problem(s)")
    return not problems


def cache_rule(at, c, spec):
    """A connd that reaches a control plane keeps the outage cache (docs/cache.md) on an
    in-memory emptyDir, its key from a Secret."""
    env = {e["name"]: e.get("value") for e in c.get("env") or []}
    if "CONND_CONTROL_PLANE" not in env:
        return []
    if not env.get("CONND_CACHE_DIR") or not env.get("CONND_CACHE_KEY_FILE"):
        return [f"{at}: a connd with a control plane must set CONND_CACHE_DIR and CONND_CACHE_KEY_FILE"]
    volumes = {v["name"]: v for v in spec.get("volumes") or []}

    def volume_at(path):
        best = None
        for m in c.get("volumeMounts") or []:
            mount = m["mountPath"].rstrip("/")
            if (path == mount or path.startswith(mount + "/")) and (not best or len(mount) > len(best[0])):
                best = (mount, volumes.get(m["name"]) or {})
        return best[1] if best else None

    problems = []
    cache = volume_at(env["CONND_CACHE_DIR"])
    if not cache or (cache.get("emptyDir") or {}).get("medium") != "Memory":
        problems.append(f"{at}: CONND_CACHE_DIR must be on an emptyDir with medium: Memory")
    key = volume_at(env["CONND_CACHE_KEY_FILE"])
    if not key or "secret" not in key:
        problems.append(f"{at}: CONND_CACHE_KEY_FILE must be in a mounted Secret")
    return problems


# The fields of kustomize.config.k8s.io/v1beta1 Kustomization these files may use.
KUSTOMIZATION_KEYS = {
    "apiVersion", "kind", "metadata", "resources", "components", "images", "namespace",
    "namePrefix", "nameSuffix", "labels", "commonLabels", "commonAnnotations", "patches",
    "configMapGenerator", "secretGenerator", "generatorOptions", "replicas",
}


def kustomize_structure(dirs):
    problems = []
    for d in dirs:
        path = os.path.join(d, "kustomization.yaml")
        docs = load_docs(path)
        if len(docs) != 1:
            problems.append(f"{path}: expected one YAML document, found {len(docs)}")
            continue
        k = docs[0]
        if k.get("apiVersion") != "kustomize.config.k8s.io/v1beta1" or k.get("kind") != "Kustomization":
            problems.append(f"{path}: not a kustomize.config.k8s.io/v1beta1 Kustomization")
        for key in sorted(set(k) - KUSTOMIZATION_KEYS):
            problems.append(f"{path}: unknown or unexpected field {key!r}")
        for r in k.get("resources") or []:
            target = os.path.join(d, r)
            if os.path.isdir(target):
                if not os.path.isfile(os.path.join(target, "kustomization.yaml")):
                    problems.append(f"{path}: resource {r!r} is a directory without kustomization.yaml")
            elif not os.path.isfile(target):
                problems.append(f"{path}: resource {r!r} does not exist")
        for img in k.get("images") or []:
            if not img.get("name") or not ({"newName", "newTag", "digest"} & set(img)):
                problems.append(f"{path}: images entry {img!r} needs name and newName/newTag/digest")
        print(f"  structure: {path}: {len(k.get('resources') or [])} resource(s), "
              f"{len(k.get('images') or [])} image override(s)")
    for p in problems:
        print(f"  FAIL {p}")
    return not problems


def connd_config(files, extract):
    problems = []
    found = 0
    for path in files:
        for doc in load_docs(path):
            data = doc.get("data") or {}
            if doc.get("kind") != "ConfigMap" or "component.yaml" not in data:
                continue
            found += 1
            where = f"{path}: ConfigMap/{doc['metadata']['name']}"
            try:
                component = yaml.safe_load(data["component.yaml"]) or {}
                others = {k: list(yaml.safe_load_all(v)) for k, v in data.items()
                          if k != "component.yaml" and k.endswith((".yaml", ".yml"))}
            except yaml.YAMLError as e:
                problems.append(f"{where}: embedded YAML does not parse: {e}")
                continue
            if str(component.get("schemaVersion")) not in {"1.0", "1.1", "1.2"}:
                problems.append(f"{where}: component.yaml schemaVersion must be 1.0, 1.1 or 1.2")
            refs = [r["name"] for r in
                    ((component.get("dependencies") or {}).get("connectionReferences") or [])]
            components, names, ids = 0, set(), set()
            for key, docs in others.items():
                for d in docs:
                    if d is None:
                        continue
                    kind = d.get("kind")
                    if kind == "Component":
                        components += 1
                    elif kind == "Connection":
                        try:
                            cid = str(uuid.UUID(str(d.get("id"))))
                        except ValueError:
                            problems.append(f"{where}: {key}: connection id {d.get('id')!r} is not a UUID")
                            cid = None
                        if cid in ids:
                            problems.append(f"{where}: {key}: duplicate connection id {cid}")
                        ids.add(cid)
                        if not 3 <= len(str(d.get("name") or "")) <= 50:
                            problems.append(f"{where}: {key}: connection name must be 3-50 characters: {d.get('name')!r}")
                        names.add(d.get("name"))
                    elif kind == "File":
                        if not str(d.get("path") or "").startswith("/"):
                            problems.append(f"{where}: {key}: kind: File needs an absolute path: {d.get('path')!r}")
                    else:
                        problems.append(f"{where}: {key}: document of unknown kind {kind!r}")
            if components != 1:
                problems.append(f"{where}: expected exactly one kind: Component, found {components}")
            for r in refs:
                if r not in names:
                    problems.append(f"{where}: connectionReference {r!r} has no kind: Connection")
            print(f"  connd-config: {where}: {len(refs)} reference(s), {len(names)} connection(s)")
            if extract:
                out = os.path.join(extract, doc["metadata"]["name"])
                os.makedirs(out, exist_ok=True)
                for k, v in data.items():
                    with open(os.path.join(out, k), "w", encoding="utf-8") as f:
                        f.write(v)
    if not found:
        problems.append("no ConfigMap with a component.yaml found")
    for p in problems:
        print(f"  FAIL {p}")
    return not problems


def unknown_fields(want, got, path=""):
    """The paths of `want` that a model's dump `got` does not have: fields it dropped."""
    out = []
    if isinstance(want, dict):
        for k, v in want.items():
            if not isinstance(got, dict) or k not in got:
                out.append(f"{path}.{k}".lstrip("."))
            else:
                out += unknown_fields(v, got[k], f"{path}.{k}")
    elif isinstance(want, list):
        for i, v in enumerate(want):
            item = got[i] if isinstance(got, list) and i < len(got) else None
            out += unknown_fields(v, item, f"{path}[{i}]")
    return out


def cert_manager(files):
    from cloudcoil.models.cert_manager import v1
    models = {"Issuer": v1.Issuer, "Certificate": v1.Certificate}
    problems, certificates, wanted = [], set(), []
    for path in files:
        for doc in load_docs(path):
            meta = doc.get("metadata") or {}
            ca_from = (meta.get("annotations") or {}).get("cert-manager.io/inject-ca-from")
            if ca_from:
                wanted.append((f"{path}: {doc.get('kind')}/{meta.get('name')}", ca_from))
            if doc.get("apiVersion") != "cert-manager.io/v1":
                continue
            where = f"{path}: {doc.get('kind')}/{meta.get('name')}"
            model = models.get(doc.get("kind"))
            if model is None:
                problems.append(f"{where}: kind {doc.get('kind')!r} is not checked here; add its model")
                continue
            try:
                back = model.model_validate(doc).model_dump(mode="json", by_alias=True, exclude_none=True)
            except Exception as e:  # pydantic's ValidationError, with every field at fault
                problems.append(f"{where}: {e}")
                continue
            for field in unknown_fields(doc, back):
                problems.append(f"{where}: unknown field {field}")
            if doc["kind"] == "Certificate":
                certificates.add(f"{meta.get('namespace')}/{meta.get('name')}")
            print(f"  cert-manager: {where}")
    for where, ca_from in wanted:
        if ca_from not in certificates:
            problems.append(f"{where}: cert-manager.io/inject-ca-from {ca_from} names no Certificate here")
        else:
            print(f"  cert-manager: {where} gets its caBundle from Certificate {ca_from}")
    for p in problems:
        print(f"  FAIL {p}")
    return not problems


def connd_invocations(path):
    """(where, argv after the binary, {CONND_*: value}) for each connd command line."""
    found = []
    if path.endswith(".service"):
        with open(path, encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                key, _, value = line.strip().partition("=")
                if not key.startswith("Exec") or not value:
                    continue
                argv = shlex.split(value.lstrip("-@+!:"))
                # `/bin/sh -c 'exec connd ... > file'`: the connd part of the script.
                if len(argv) == 3 and argv[1] == "-c" and os.path.basename(argv[0]) == "sh":
                    script = shlex.split(argv[2].split(">")[0])
                    argv = script[1:] if script[:1] == ["exec"] else script
                if argv and os.path.basename(argv[0]) == "connd":
                    found.append((f"{path}:{n}", argv[1:], {}))
        return found
    for doc in load_docs(path):
        if doc.get("kind") not in POD_KINDS:
            continue
        spec = pod_spec(doc)
        for c in (spec.get("initContainers") or []) + (spec.get("containers") or []):
            env = {e["name"]: e["value"] for e in c.get("env") or [] if e["name"].startswith("CONND_") and "value" in e}
            where = f"{path}: container {c.get('name')}"
            argv = list(c.get("command") or []) + list(c.get("args") or [])
            if argv and os.path.basename(argv[0]) == "connd":
                found.append((where, argv[1:], env))
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                cmd = ((c.get(probe) or {}).get("exec") or {}).get("command") or []
                if cmd and os.path.basename(cmd[0]) == "connd":
                    # A probe inherits the container's environment, meant for its command.
                    found.append((f"{where} {probe}", cmd[1:], {}))
    return found


def connd_commands(binary, files):
    problems = []
    count = 0
    for path in files:
        for where, argv, env in connd_invocations(path):
            count += 1
            # The workload's command after `--` is not connd's to parse.
            flags = argv[: argv.index("--")] if "--" in argv else argv
            clean = {k: v for k, v in os.environ.items() if not k.startswith("CONND_")}
            run = subprocess.run([binary, *flags, "--help"], env=clean, capture_output=True, text=True)
            if run.returncode != 0:
                problems.append(f"{where}: `connd {' '.join(flags)}` does not parse: {run.stderr.strip()}")
                continue
            for name in env:
                if f"[env: {name}=" not in run.stdout:
                    problems.append(f"{where}: {name} is not read by `connd {flags[0] if flags else ''}`")
            print(f"  {where}: connd {' '.join(argv)}" + (f" (env: {', '.join(sorted(env))})" if env else ""))
    if count == 0:
        problems.append("no connd command line found")
    for p in problems:
        print(f"  FAIL {p}")
    return not problems


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 64
    cmd, args = argv[1], argv[2:]
    if cmd == "policy":
        return 0 if policy(args) else 1
    if cmd == "cert-manager":
        return 0 if cert_manager(args) else 1
    if cmd == "kustomize-structure":
        return 0 if kustomize_structure(args) else 1
    if cmd == "connd-commands" and args:
        return 0 if connd_commands(args[0], args[1:]) else 1
    if cmd == "connd-config":
        extract = None
        if args[:1] == ["--extract"]:
            extract, args = args[1], args[2:]
        return 0 if connd_config(args, extract) else 1
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv))
