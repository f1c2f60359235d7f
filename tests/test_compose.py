"""docker-compose.yml, Dockerfile and .dockerignore, checked without a Docker engine.

`docker-compose config -q` (Debian's docker-compose, no engine needed) validates the file; the
rest reads the files and runs what they call outside Docker: the image's command and health
check, the loader's command line, and the wheel build from the context .dockerignore admits.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from cds_hooks.cli import COMMANDS
from tests.servers import free_port, stop

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def parse_cli(argv: list[str]):
    """Parse a command line with the real `cds-hooks` parser (without running it)."""
    import argparse

    assert argv[0] == "cds-hooks"
    parser = argparse.ArgumentParser(prog="cds-hooks")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, module in COMMANDS.items():
        module.add_arguments(commands.add_parser(name))
    return parser.parse_args(argv[1:])


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined; comments dropped."""
    joined, out = "", []
    for line in DOCKERFILE.splitlines():
        if line.strip().startswith("#") and not joined:
            continue
        joined += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if line.endswith("\\"):
            continue
        if joined:
            keyword, _, rest = joined.partition(" ")
            out.append((keyword.upper(), rest.strip()))
        joined = ""
    return out


def last(instruction: str) -> str:
    found = [args for kw, args in dockerfile_instructions() if kw == instruction]
    assert found, f"the Dockerfile has no {instruction}"
    return found[-1]


def exec_form(args: str) -> list[str]:
    return json.loads(args)


def interpolate(value: str) -> str:
    """Compose's `${VAR:-default}`, resolved from an empty environment (the defaults)."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", lambda m: m.group(1), str(value))


# ---- docker-compose.yml ------------------------------------------------------------------------


def test_compose_file_is_valid_for_docker_compose():
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.skip("docker-compose is not installed (.ci/run: apt-get install docker-compose)")
    done = subprocess.run(
        [binary, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr


def test_service_runs_the_image_serve_command_and_opts_out_of_auth_explicitly():
    cds = SERVICES["cds"]
    assert cds["build"]["context"] == "."
    args = parse_cli(cds["command"])
    assert args.command == "serve" and args.host == "0.0.0.0" and args.port == 8080
    assert args.allow_unauthenticated is True
    text = (ROOT / "docker-compose.yml").read_text()
    flag_line = text.index("--allow-unauthenticated")
    assert "sandbox" in text[max(0, flag_line - 400) : flag_line]  # the comment saying why
    env = cds["environment"]
    assert env["CDS_ALLOW_HTTP_FHIR"] == "true"
    assert env["CDS_FHIR_ALLOW_PRIVATE"] == "true"  # HAPI is on the compose network
    assert env["CDS_PREVIEW"] == "true"
    assert any(v.endswith(":/var/lib/cds-hooks") for v in cds["volumes"])
    assert cds["healthcheck"]["test"][0] == "CMD"


def test_hapi_has_a_health_check_it_can_run_and_the_loader_waits_for_it():
    hapi = SERVICES["hapi"]
    assert "hapiproject/hapi" in hapi["image"]
    test = hapi["healthcheck"]["test"]
    # distroless image: the probe binary comes from the busybox one-shot through a volume
    probe_volume = next(v for v in hapi["volumes"] if v.endswith(":/probe:ro")).split(":")[0]
    tools = SERVICES["probe-tools"]
    assert test[1].startswith("/probe/") and test[2] == "wget"
    assert any(v.startswith(f"{probe_volume}:/probe") for v in tools["volumes"])
    assert tools["command"][-1] == test[1]
    assert hapi["depends_on"]["probe-tools"]["condition"] == "service_completed_successfully"
    assert test[-1].endswith("/fhir/metadata")

    loader = SERVICES["fixtures-loader"]
    assert loader["depends_on"]["hapi"]["condition"] == "service_healthy"
    assert loader["restart"] == "no"
    args = parse_cli(loader["command"])
    assert args.command == "load-fixtures"
    assert args.fhir == "http://hapi:8080/fhir"  # the hapi service on the compose network


def test_ports_are_published_on_loopback_only():
    """Nothing in the sandbox authenticates: no port may be reachable from the network."""
    published = [p for service in SERVICES.values() for p in service.get("ports", [])]
    assert published
    for port in published:
        assert str(port).startswith("127.0.0.1:"), port


def test_every_long_running_service_has_a_health_check():
    for name, service in SERVICES.items():
        if service.get("restart") == "no":
            continue
        assert service.get("healthcheck", {}).get("test"), name


# ---- Dockerfile and .dockerignore --------------------------------------------------------------


def test_image_runs_as_a_non_root_user_with_a_data_volume():
    user = last("USER").split(":")[0]
    assert user not in {"", "0", "root"}
    assert "CDS_DATA_DIR=/var/lib/cds-hooks" in DOCKERFILE
    assert "/var/lib/cds-hooks" in last("VOLUME")
    assert last("FROM").startswith("python:3.11")


def test_image_command_is_the_secure_serve_default(tmp_path):
    argv = exec_form(last("CMD"))
    args = parse_cli(argv)
    assert args.command == "serve" and args.host == "0.0.0.0" and args.port == 8080
    assert args.allow_unauthenticated is False  # production images must configure issuers
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    # on a free port: should the refusal ever break, nothing else's port is taken meanwhile
    argv[argv.index("--port") + 1] = str(free_port())
    done = subprocess.run(
        [sys.executable, "-m", "cds_hooks.cli", *argv[1:]],
        capture_output=True,
        text=True,
        timeout=30,
        env={**env, "CDS_DATA_DIR": str(tmp_path)},  # its own: the app starts before the refusal
    )
    # no JWT issuers configured: refuses to listen on 0.0.0.0 (docs/security.md)
    assert done.returncode == 2, done.stderr


@pytest.fixture
def running_service(tmp_path):
    """The compose service's command, on a loopback port, as a real process."""
    port = free_port()
    argv = SERVICES["cds"]["command"]
    args = [a if a != "0.0.0.0" else "127.0.0.1" for a in argv[1:]]
    args[args.index("--port") + 1] = str(port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CDS_")}
    env.update({k: interpolate(v) for k, v in SERVICES["cds"]["environment"].items()})
    env.update({"CDS_DATA_DIR": str(tmp_path), "CDS_LOG_FORMAT": "none"})
    process = subprocess.Popen(
        [sys.executable, "-m", "cds_hooks.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield port, process
    finally:
        stop(process, timeout=15)
        if process.stderr:
            process.stderr.close()


def healthcheck_command(port: int) -> list[str]:
    argv = exec_form(last("HEALTHCHECK").split("CMD", 1)[1].strip())
    assert argv[0] == "python"
    return [sys.executable, *[a.replace(":8080/", f":{port}/") for a in argv[1:]]]


def test_health_check_passes_on_the_running_service_and_fails_without_it(running_service):
    port, process = running_service
    check = healthcheck_command(port)
    deadline = time.monotonic() + 60
    while True:  # the service takes a moment to start
        done = subprocess.run(check, capture_output=True, timeout=30)
        if done.returncode == 0 or time.monotonic() > deadline or process.poll() is not None:
            break
        time.sleep(0.3)
    assert done.returncode == 0, process.stderr.read().decode() if process.poll() else done.stderr
    compose_check = SERVICES["cds"]["healthcheck"]["test"]
    assert compose_check[1:] == exec_form(last("HEALTHCHECK").split("CMD", 1)[1].strip())
    dead = subprocess.run(healthcheck_command(free_port()), capture_output=True, timeout=30)
    assert dead.returncode != 0


def dockerignore_admits(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-admits."""
    admitted = True
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        candidates = prefixes + ([path] if pattern.startswith("**/") else [])
        glob = pattern.removeprefix("**/")
        hit = any(fnmatch.fnmatch(c, pattern) for c in prefixes) or (
            pattern.startswith("**/") and any(fnmatch.fnmatch(p, glob) for p in parts)
        )
        if hit or any(fnmatch.fnmatch(c, pattern) for c in candidates):
            admitted = negate
    return admitted


def test_dockerignore_keeps_secrets_and_junk_out_but_lets_the_build_in():
    for path in ("pyproject.toml", "cds_hooks/app.py", "cds_hooks/static/preview.js"):
        assert dockerignore_admits(path), path
    assert dockerignore_admits("fhir_fixtures/bac-allergy-critical/request.json")
    for path in (".venv/bin/python", ".git/config", "var/cds-hooks.sqlite", "tests/test_x.py"):
        assert not dockerignore_admits(path), path
    assert not dockerignore_admits("cds_hooks/__pycache__/app.cpython-311.pyc")
    for copied in ("fhir_fixtures",):
        assert f"COPY {copied}" in DOCKERFILE


def test_the_wheel_built_from_the_docker_context_carries_the_page_and_data(tmp_path):
    pytest.importorskip("wheel", reason="wheel is not installed (pip install -e '.[test]')")
    context = tmp_path / "context"
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT).as_posix()
        if path.is_file() and not relative.startswith((".git/", ".venv/")):
            if dockerignore_admits(relative):
                target = context / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target)
    done = subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("--no-index", "-w", str(tmp_path / "wheels"), str(context)),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [wheel] = list((tmp_path / "wheels").glob("*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("preview.html", "preview.js", "preview.css"):
        assert f"cds_hooks/static/{needed}" in names
    assert any(n.startswith("cds_hooks/knowledge/") and n.endswith(".json") for n in names)
    assert any(n.startswith("cds_hooks/schemas/") for n in names)
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "cds-hooks = cds_hooks.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_compose_commands_are_shell_free_lists():
    for name, service in SERVICES.items():
        command = service.get("command")
        assert command is None or isinstance(command, list), name
    assert shlex.join(SERVICES["fixtures-loader"]["command"]).startswith("cds-hooks load-fixtures")


# ---- PostgreSQL: the image's driver and the compose profile ------------------------------------


def test_the_image_installs_the_postgres_driver():
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(dep.startswith("psycopg") for dep in extras["postgres"])
    runs = [args for kw, args in dockerfile_instructions() if kw == "RUN"]
    assert any("pip wheel" in r and "'.[postgres]'" in r for r in runs)
    assert any("pip install" in r and "cds-hooks-antispasticity[postgres]" in r for r in runs)


def test_postgres_profile_runs_the_service_on_a_postgresql_it_waits_for():
    postgres, cds = SERVICES["postgres"], SERVICES["cds-pg"]
    assert postgres["profiles"] == ["postgres"] and cds["profiles"] == ["postgres"]
    assert "ports" not in postgres  # only the compose network reaches the database
    assert postgres["healthcheck"]["test"][1] == "pg_isready"
    assert cds["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert cds["command"] == SERVICES["cds"]["command"]  # the same service, another store
    url = interpolate(cds["environment"]["CDS_DATABASE_URL"])
    env = postgres["environment"]
    password = interpolate(env["POSTGRES_PASSWORD"])
    expected = f"postgresql+psycopg://{env['POSTGRES_USER']}:{password}@postgres:5432/"
    assert url == expected + env["POSTGRES_DB"]
    for name in ("cds", "hapi"):  # the default stack does not start PostgreSQL
        assert "profiles" not in SERVICES[name]
