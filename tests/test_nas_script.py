"""deploy/nas (issue 12): deploy, upgrade, watch and roll back the NAS container over SSH.

No Docker engine and no NAS here: the script runs against fakes on PATH. The fake `ssh` records
its argv and runs the remote command with `sh` in a folder standing for the NAS (`/volume1/...`
is mapped under tmp_path, HOME is there too); the fake `docker` records its argv and plays a
scenario (health per started container, a failing build, queue schemas, log lines); the fake
`sudo` records and runs what it is given. All three append to one event log, so the order of the
steps across ssh and docker can be asserted: stream, build, tag, up, wait, keep or roll back.

The project is a throwaway git repository holding this checkout's deploy files and the script,
so the tests do not depend on (or disturb) the working tree around them.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "deploy" / "nas"
TARGET = "admin@nas.example"
REMOTE = "/volume1/docker/trio-gfxsync"
NAS_SECRET = "sb_secret_NAS0nly0ValueXyZ123456789"
LOCAL_SECRET = "sb_secret_L0cal0nlyValueAbC98765"
TOKEN_SECRET = "dash-token-7f3c9a1e55"
FAST = ["--interval", "0", "--timeout", "3", "--settle", "0"]
RUN_TIMEOUT = 60

FAKE_SSH = r'''#!{python}
"""Fake ssh: record, then run the command with sh in the fake NAS (stdin passed through)."""
import json, os, subprocess, sys
args = sys.argv[1:]
while args and args[0].startswith("-"):
    args = args[2:] if args[0] in ("-o", "-p", "-i", "-l", "-F", "-J") else args[1:]
target, command = args[0], " ".join(args[1:])
root = os.environ["FAKE_NAS_ROOT"]
data = sys.stdin.buffer.read()
events = os.environ["FAKE_EVENTS"]
with open(events) as f:
    n = sum(1 for _ in f)
if data:
    with open(os.path.join(os.environ["FAKE_STDIN_DIR"], f"{n}.bin"), "wb") as f:
        f.write(data)
with open(events, "a") as f:
    f.write(json.dumps({"kind": "ssh", "n": n, "target": target, "command": command,
                        "stdin": len(data)}) + "\n")
env = dict(os.environ, HOME=os.path.join(root, "home"), FAKE_SIDE="nas",
           PATH=os.environ["FAKE_BIN"] + ":/usr/bin:/bin")
shell = os.environ.get("FAKE_REMOTE_SHELL", "sh").split()
result = subprocess.run([*shell, "-c", command.replace("/volume1/", root + "/volume1/")],
                        input=data, cwd=env["HOME"], env=env)
sys.exit(result.returncode)
'''

FAKE_DOCKER = r'''#!{python}
"""Fake docker: record, keep images and one container in a state file, play the scenario."""
import json, os, sys
argv = sys.argv[1:]
side = os.environ.get("FAKE_SIDE", "local")
with open(os.environ["FAKE_SCENARIO"]) as f:
    scenario = json.load(f)
state_path = os.environ["FAKE_DOCKER_STATE"] + "." + side
try:
    with open(state_path) as f:
        state = json.load(f)
except FileNotFoundError:
    state = {"images": {}, "container": None, "scenario": None, "ups": 0, "next_id": 1}
if state["scenario"] != scenario["id"]:
    state["scenario"], state["ups"] = scenario["id"], 0
with open(os.environ["FAKE_EVENTS"], "a") as f:
    f.write(json.dumps({"kind": "docker", "side": side, "argv": argv, "cwd": os.getcwd(),
                        "image_env": os.environ.get("GFXSYNC_IMAGE"),
                        "sudo": os.environ.get("FAKE_VIA_SUDO") == "1"}) + "\n")

def save():
    with open(state_path, "w") as f:
        json.dump(state, f)

def fail(message, code=1):
    print(message, file=sys.stderr)
    save()
    sys.exit(code)

def new_id():
    state["next_id"] += 1
    return "sha256:%04d" % state["next_id"]

def opt(name):
    return argv[argv.index(name) + 1] if name in argv else None

cmd = argv[0] if argv else ""
if cmd == "build":
    if "-" in argv[1:]:
        sys.stdin.buffer.read()
    if scenario.get("build_fail"):
        fail("ERROR: failed to solve: process \"pip wheel\" did not complete successfully")
    state["images"][opt("-t")] = new_id()
    print("Successfully tagged " + opt("-t"))
elif cmd == "tag":
    source, dest = argv[1], argv[2]
    if source not in state["images"]:
        fail("Error response from daemon: No such image: " + source)
    state["images"][dest] = state["images"][source]
elif cmd == "rmi":
    state["images"].pop(argv[1], None)
elif cmd == "compose" and "up" in argv:
    image = os.environ.get("GFXSYNC_IMAGE")
    if not os.path.isfile("docker-compose.yml") or not os.path.isfile("docker-compose.nas.yml"):
        fail("no compose files in " + os.getcwd())
    if not os.access(".env", os.R_OK):
        fail("env file " + os.path.join(os.getcwd(), ".env") + " not found")
    if not image or image not in state["images"]:
        fail("pull access denied for %s" % image)
    if state["ups"] in scenario.get("up_fail", []):
        state["ups"] += 1
        fail("Error response from daemon: driver failed programming external connectivity: "
             "Bind for 0.0.0.0:8080 failed: port is already allocated")
    ups = scenario.get("ups", [])
    sequence = ups[state["ups"]] if state["ups"] < len(ups) else scenario.get("health", ["healthy"])
    state["ups"] += 1
    running = state["container"]
    if running is None or running["image"] != image or "--force-recreate" in argv:
        state["container"] = {"image": image, "sequence": sequence, "polls": 0}
elif cmd == "inspect":
    container = state["container"]
    if container is None:
        fail("Error: No such object: trio-gfxsync")
    if "{{.State.Health.Status}}" == opt("--format"):
        sequence = container["sequence"]
        print(sequence[min(container["polls"], len(sequence) - 1)])
        container["polls"] += 1
    else:
        print("container: /trio-gfxsync %s running" % container["image"])
elif cmd == "run" and "version" in argv:
    image = [a for a in argv if a.startswith("trio-gfxsync:")][0]
    schema = scenario.get("schemas", {}).get(image.split(":", 1)[1], scenario.get("schema"))
    if schema is None:
        fail("trio-gfxsync: error: invalid choice: 'version'", 2)
    print("trio-gfxsync 1.2.3")
    print("queue_schema %d" % schema)
elif cmd == "logs":
    print("\n".join(scenario.get("logs", [])))
elif cmd == "exec":
    print("in container: " + " ".join(argv[2:]))
elif cmd == "save":
    sys.stdout.write("FAKEIMAGE %s %s\n" % (argv[1], state["images"][argv[1]]))
elif cmd == "load":
    for line in sys.stdin.read().splitlines():
        _, name, _ = line.split()
        state["images"][name] = new_id()
        print("Loaded image: " + name)
save()
'''

FAKE_SUDO = r'''#!{python}
"""Fake sudo: only `sudo -n [VAR=value...] command`; record and run it."""
import json, os, sys
argv = sys.argv[1:]
with open(os.environ["FAKE_EVENTS"], "a") as f:
    f.write(json.dumps({"kind": "sudo", "argv": argv}) + "\n")
if not argv or argv[0] != "-n":
    print("sudo: a password is required", file=sys.stderr)
    sys.exit(1)
argv = argv[1:]
env = dict(os.environ, FAKE_VIA_SUDO="1")
env.pop("GFXSYNC_IMAGE", None)  # env_reset
while argv and "=" in argv[0] and not argv[0].startswith("/"):
    name, _, value = argv.pop(0).partition("=")
    env[name] = value
os.execvpe(argv[0], argv, env)
'''


@dataclass
class Run:
    code: int
    out: str
    err: str
    events: list[dict[str, Any]]

    @property
    def text(self) -> str:
        return self.out + self.err

    @property
    def ssh(self) -> list[str]:
        return [e["command"] for e in self.events if e["kind"] == "ssh"]

    def docker(self, side: str = "nas") -> list[list[str]]:
        return [e["argv"] for e in self.events if e["kind"] == "docker" and e["side"] == side]

    def steps(self) -> list[str]:
        """The run as named steps, in order (repeats collapsed: the polls are one `wait`)."""
        names: list[str] = []
        for event in self.events:
            if event["kind"] == "ssh" and "tar -xf -" in event["command"]:
                name = "stream"
            elif event["kind"] != "docker" or event["side"] != "nas":
                continue
            else:
                argv = event["argv"]
                if argv[0] == "build":
                    name = "build"
                elif argv[0] == "tag":
                    name = "tag-latest" if argv[2].endswith(":latest") else "tag"
                elif argv[0] == "compose" and "up" in argv:
                    name = "up " + (event["image_env"] or "?").split(":", 1)[1]
                elif argv[0] == "inspect":
                    name = "wait"
                elif argv[0] == "run":
                    name = "schema"
                elif argv[0] == "load":
                    name = "load"
                else:
                    continue
            if not names or names[-1] != name:
                names.append(name)
        return names


@dataclass
class Nas:
    """A project checkout with the script, and the fakes standing for the NAS."""

    tmp: Path
    repo: Path
    root: Path
    bin: Path
    events: Path
    scenario: dict[str, Any] = field(default_factory=dict)

    @property
    def remote(self) -> Path:
        return self.root / REMOTE.lstrip("/")

    def state(self, name: str) -> str:
        path = self.remote / "state" / name
        return path.read_text().strip() if path.exists() else ""

    def play(self, **scenario: Any) -> None:
        self.scenario = {"id": uuid.uuid4().hex, **scenario}

    def run(self, *args: str, env: dict[str, str] | None = None, shell: str = "") -> Run:
        scenario_path = self.tmp / "scenario.json"
        scenario_path.write_text(json.dumps(self.scenario or {"id": "default"}))
        self.events.write_text("")
        full_env = {
            **os.environ,
            "PATH": f"{self.bin}:{os.environ['PATH']}",
            "FAKE_BIN": str(self.bin),
            "FAKE_NAS_ROOT": str(self.root),
            "FAKE_EVENTS": str(self.events),
            "FAKE_STDIN_DIR": str(self.tmp / "stdin"),
            "FAKE_SCENARIO": str(scenario_path),
            "FAKE_DOCKER_STATE": str(self.tmp / "docker-state"),
            **(env or {}),
        }
        for name in ("NAS_DIR", "NAS_SUDO", "NAS_TIMEOUT", "NAS_SETTLE", "NAS_SSH", "NAS_TARGET"):
            if env is None or name not in env:
                full_env.pop(name, None)
        if shell:
            full_env["FAKE_REMOTE_SHELL"] = shell
        result = subprocess.run(
            [*shell.split(), str(self.repo / "deploy" / "nas"), *args],
            capture_output=True,
            text=True,
            env=full_env,
            cwd=self.tmp,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        events = [json.loads(line) for line in self.events.read_text().splitlines()]
        return Run(result.returncode, result.stdout, result.stderr, events)

    def deploy(self, *args: str) -> Run:
        return self.run("deploy", TARGET, *FAST, *args)

    def change(self, text: str = "changed") -> None:
        """An uncommitted change: the next deploy has a new hash."""
        with (self.repo / "app.py").open("a") as f:
            f.write(f"# {text} {uuid.uuid4().hex}\n")

    def shipped_tars(self) -> list[dict[str, bytes | None]]:
        """Every tar that went to the NAS: member name -> content (None for a non-file)."""
        tars = []
        for path in sorted((self.tmp / "stdin").glob("*.bin")):
            try:
                with tarfile.open(fileobj=io.BytesIO(path.read_bytes())) as tar:
                    members = {}
                    for member in tar.getmembers():
                        name = Path(member.name).as_posix().removeprefix("./")
                        data = tar.extractfile(member) if member.isfile() else None
                        members[name] = data.read() if data else None
            except tarfile.ReadError:
                continue  # docker save's stream in the --image test
            tars.append(members)
        return tars


def _git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.com",
        "GIT_CONFIG_GLOBAL": "/dev/null",
        "GIT_CONFIG_NOSYSTEM": "1",
    }
    return subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, env=env
    ).stdout


def _write_fake(path: Path, text: str) -> None:
    path.write_text(text.replace("{python}", sys.executable))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


@pytest.fixture
def nas(tmp_path: Path) -> Nas:
    repo = tmp_path / "project"
    (repo / "deploy").mkdir(parents=True)
    shutil.copy2(SCRIPT, repo / "deploy" / "nas")
    for name in ("docker-compose.yml", "docker-compose.nas.yml", ".env.example"):
        shutil.copy2(ROOT / "deploy" / name, repo / "deploy" / name)
    shutil.copy2(ROOT / "Dockerfile", repo / "Dockerfile")
    (repo / "pyproject.toml").write_text('[project]\nname = "trio-gfxsync"\nversion = "1.2.3"\n')
    (repo / "app.py").write_text("print('hello')\n")
    (repo / ".gitignore").write_text(".env\n.venv/\n")
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "initial")
    # secrets that must never leave this machine: ignored, untracked-but-not-ignored, nested
    (repo / ".env").write_text(f"GFX_SYNC_SUPABASE_SECRET_KEY={LOCAL_SECRET}\n")
    (repo / "deploy" / ".env").write_text(f"GFX_SYNC_DASHBOARD_TOKEN={TOKEN_SECRET}\n")
    (repo / "local.env").write_text(f"KEY={LOCAL_SECRET}\n")
    (repo / ".venv").mkdir()
    (repo / ".venv" / "junk").write_text("x\n")

    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    _write_fake(fake_bin / "ssh", FAKE_SSH)
    _write_fake(fake_bin / "docker", FAKE_DOCKER)
    _write_fake(fake_bin / "sudo", FAKE_SUDO)
    root = tmp_path / "nasroot"
    (root / "home").mkdir(parents=True)
    (tmp_path / "stdin").mkdir()
    events = tmp_path / "events.jsonl"
    events.write_text("")
    return Nas(tmp_path, repo, root, fake_bin, events)


def _tag_of(run: Run) -> str:
    match = re.search(r"trio-gfxsync:(1\.2\.3-[0-9a-f]{7}(?:-dirty)?-[0-9a-f]{12})", run.out)
    assert match, run.text
    return match.group(1)


def _assert_queue_kept(run: Run) -> None:
    """Nothing that could drop the queue volume: no down, no volume removal, no -v/-V."""
    for argv in run.docker():
        assert "down" not in argv and "volume" not in argv, argv
        if argv and argv[0] == "compose":
            assert not {"-v", "--volumes", "-V", "--renew-anon-volumes"} & set(argv), argv


def _good(nas: Nas) -> tuple[Run, str]:
    nas.play(health=["healthy"], schema=1)
    run = nas.deploy()
    assert run.code == 0, run.text
    return run, _tag_of(run)


# -- lint ------------------------------------------------------------------------------------------


def test_shellcheck_reports_nothing() -> None:
    found = shutil.which("shellcheck")
    if found is None:
        pytest.fail("shellcheck not found on PATH: scripts/test installs Debian's shellcheck")
    result = subprocess.run(
        [found, "--shell=sh", "--severity=style", str(SCRIPT)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, f"shellcheck:\n{result.stdout}{result.stderr}"
    assert SCRIPT.read_text().startswith("#!/bin/sh\n")
    assert os.access(SCRIPT, os.X_OK), "deploy/nas must be executable"


def test_the_set_up_scripts_pass_shellcheck() -> None:
    found = shutil.which("shellcheck")
    assert found, "shellcheck not found on PATH: scripts/test installs Debian's shellcheck"
    scripts = sorted(str(p) for p in (ROOT / "scripts").iterdir() if p.is_file())
    scripts.append(str(ROOT / ".ci" / "run"))
    result = subprocess.run(
        [found, "--severity=style", "-x", *scripts],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 0, f"shellcheck:\n{result.stdout}{result.stderr}"


def test_compose_override_passes_the_compose_spec_schema() -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "check_jsonschema",
            "--builtin-schema",
            "vendor.compose-spec",
            str(ROOT / "deploy" / "docker-compose.nas.yml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "deploy" / "docker-compose.nas.yml").read_text()
    assert "image: ${GFXSYNC_IMAGE:-trio-gfxsync:latest}" in text
    assert "container_name: trio-gfxsync" in text


# -- deploy ----------------------------------------------------------------------------------------


def test_good_first_deploy(nas: Nas) -> None:
    nas.play(ups=[["starting", "starting", "healthy"]], schema=1)
    run = nas.deploy("--settle", "1")
    assert run.code == 0, run.text
    tag = _tag_of(run)
    assert run.steps() == ["stream", "build", "tag", f"up {tag}", "wait", "tag-latest"]
    assert all(e["target"] == TARGET for e in run.events if e["kind"] == "ssh")
    # the build is tagged with the version and the git revision
    build = run.docker()[0]
    assert build[build.index("-t") + 1] == f"trio-gfxsync:{tag}"
    revision = _git(nas.repo, "rev-parse", "--short=7", "HEAD").strip()
    assert f"org.opencontainers.image.revision={revision}" in build
    # every ssh step finds docker the same way; the tag reaches compose through its environment
    docker_steps = [c for c in run.ssh if '"$D"' in c]
    assert docker_steps and all(
        "D=$(command -v docker || echo /usr/local/bin/docker)" in c for c in docker_steps
    )
    up = next(e for e in run.events if e["kind"] == "docker" and "up" in e["argv"])
    assert up["image_env"] == f"trio-gfxsync:{tag}"
    assert up["cwd"] == str(nas.remote / "releases" / tag / "deploy")
    assert up["argv"][:5] == ["compose", "-f", "docker-compose.yml", "-f", "docker-compose.nas.yml"]
    assert nas.state("current") == tag and nas.state("previous") == ""
    assert "kept" in run.out and "dashboard: http://nas.example:8080/" in run.out
    _assert_queue_kept(run)


def test_upgrade_keeps_the_previous_tag(nas: Nas) -> None:
    _, first = _good(nas)
    nas.change()
    nas.play(health=["healthy"], schema=1)
    run = nas.deploy()
    assert run.code == 0, run.text
    second = _tag_of(run)
    assert second != first and second.split("-")[2] == "dirty"
    assert run.steps() == ["stream", "build", "tag", f"up {second}", "wait", "tag-latest"]
    assert (nas.state("current"), nas.state("previous")) == (second, first)
    assert f"previous trio-gfxsync:{first} kept for rollback" in run.out
    assert {p.name for p in (nas.remote / "releases").iterdir()} == {first, second}
    _assert_queue_kept(run)


def test_never_healthy_rolls_back(nas: Nas) -> None:
    _, first = _good(nas)
    nas.change()
    nas.play(ups=[["starting"], ["healthy"]], schema=1)
    run = nas.deploy("--timeout", "2")
    assert run.code != 0
    second = _tag_of(run)
    assert run.steps() == [
        "stream",
        "build",
        "tag",
        f"up {second}",
        "wait",
        "schema",
        f"up {first}",
        "wait",
    ]
    assert f"rolled back to trio-gfxsync:{first} because trio-gfxsync:{second}" in run.err
    assert "not healthy within 2s (last status: starting)" in run.err
    assert nas.state("current") == first and nas.state("failed") == second
    _assert_queue_kept(run)


def test_unhealthy_at_once_rolls_back_without_waiting_out_the_limit(nas: Nas) -> None:
    _, first = _good(nas)
    nas.change()
    nas.play(ups=[["starting", "unhealthy"], ["healthy"]], schema=1)
    run = nas.deploy("--timeout", "50")
    assert run.code != 0
    assert f"rolled back to trio-gfxsync:{first}" in run.err and "reported unhealthy" in run.err


def test_healthy_then_unhealthy_in_the_settle_window_rolls_back(nas: Nas) -> None:
    _, first = _good(nas)
    nas.change()
    nas.play(ups=[["healthy", "healthy", "unhealthy"], ["healthy"]], schema=1)
    run = nas.deploy("--settle", "20")
    assert run.code != 0
    second = _tag_of(run)
    assert run.steps()[-3:] == ["schema", f"up {first}", "wait"]
    assert "turned unhealthy" in run.err and f"rolled back to trio-gfxsync:{first}" in run.err
    assert nas.state("current") == first and nas.state("previous") == ""
    assert nas.state("failed") == second


def test_first_deploy_never_healthy_has_nothing_to_roll_back_to(nas: Nas) -> None:
    nas.play(health=["starting"], schema=1)
    run = nas.deploy("--timeout", "1")
    assert run.code != 0
    tag = _tag_of(run)
    assert run.steps() == ["stream", "build", "tag", f"up {tag}", "wait"]
    assert "no previous version to roll back to" in run.err
    assert "Fill these in" in run.err, "a fresh .env is the likely cause: say so again"
    assert nas.state("current") == ""


def test_compose_up_failure_rolls_back(nas: Nas) -> None:
    _, first = _good(nas)
    nas.change()
    nas.play(up_fail=[0], health=["healthy"], schema=1)
    run = nas.deploy()
    assert run.code != 0
    assert run.steps()[-3:] == ["schema", f"up {first}", "wait"]
    assert "port is already allocated" in run.err
    assert f"rolled back to trio-gfxsync:{first} because" in run.err
    assert "could not be started" in run.err


@pytest.mark.parametrize("shell", ["bash --posix", "bash"])
def test_runs_under_bash_too(nas: Nas, shell: str) -> None:
    """macOS's /bin/sh is bash 3.2 in POSIX mode; DSM's /bin/sh is bash."""
    nas.play(health=["healthy"], schema=1)
    first = nas.run("deploy", TARGET, *FAST, shell=shell)
    assert first.code == 0, first.text
    nas.change()
    nas.play(ups=[["unhealthy"], ["healthy"]], schema=1)
    second = nas.run("deploy", TARGET, *FAST, shell=shell)
    assert second.code != 0 and f"rolled back to trio-gfxsync:{_tag_of(first)}" in second.err
    nas.play(health=["healthy"], schema=1)
    again = nas.run("deploy", TARGET, *FAST, shell=shell)
    assert again.code == 0 and "build" in again.steps(), again.text


def test_build_failure_starts_nothing(nas: Nas) -> None:
    _, first = _good(nas)
    nas.change()
    nas.play(build_fail=True, schema=1)
    run = nas.deploy()
    assert run.code != 0
    assert run.steps() == ["stream", "build"]
    assert "build failed" in run.err and f"trio-gfxsync:{first} is still running" in run.err
    assert "pip wheel" in run.err, "the end of the build output is shown"
    assert nas.state("current") == first


def test_repeated_deploy_with_no_change_restarts_nothing(nas: Nas) -> None:
    _, first = _good(nas)
    nas.play(health=["healthy"], schema=1)
    run = nas.deploy()
    assert run.code == 0, run.text
    assert run.steps() == ["wait"], "only the health is read"
    assert not [a for a in run.docker() if a[0] in ("build", "tag", "compose", "restart", "rm")]
    assert len(run.ssh) == 2 and "tar" not in " ".join(run.ssh)
    assert "no change" in run.out and first in run.out
    assert nas.state("current") == first


def test_no_change_but_container_gone_starts_it_again(nas: Nas) -> None:
    _, first = _good(nas)
    state = nas.tmp / "docker-state.nas"
    data = json.loads(state.read_text())
    data["container"] = None
    state.write_text(json.dumps(data))
    run = nas.deploy()
    assert run.code == 0, run.text
    assert run.steps() == ["wait", f"up {first}", "wait"]


def test_committed_change_is_a_change_too(nas: Nas) -> None:
    _, first = _good(nas)
    nas.change()
    _git(nas.repo, "commit", "-q", "-am", "second")
    nas.play(health=["healthy"], schema=1)
    run = nas.deploy()
    assert run.code == 0, run.text
    second = _tag_of(run)
    assert "dirty" not in second and second != first
    assert "build" in run.steps()


def test_rebuild_builds_again_without_cache_under_its_own_tag(nas: Nas) -> None:
    _, first = _good(nas)
    nas.play(health=["healthy"], schema=1)
    run = nas.deploy("--rebuild")
    assert run.code == 0, run.text
    build = run.docker()[0]
    assert build[0] == "build" and "--no-cache" in build
    assert nas.state("current").startswith(first + ".r") and nas.state("previous") == first
    nas.play(health=["healthy"], schema=1)
    again = nas.deploy()
    assert "no change" in again.out, "a rebuild's tag still carries the source hash"


def test_dry_run_runs_nothing_remote(nas: Nas) -> None:
    run = nas.run("deploy", TARGET, "--dry-run")
    assert run.code == 0, run.text
    assert run.events == [], "a dry run runs no ssh and no docker"
    assert not nas.remote.exists()
    printed = [line for line in run.out.splitlines() if line.startswith("[dry-run] ssh ")]
    assert len(printed) >= 7, run.out
    assert re.search(rf"^\[dry-run\] tar -cf - -T <the \d+ files> \| ssh {TARGET} ", run.out, re.M)
    for fragment in (
        "tar -xf -",
        " build -t trio-gfxsync:1.2.3-",
        " tag trio-gfxsync:",
        "compose -f docker-compose.yml -f docker-compose.nas.yml up -d",
        "{{.State.Health.Status}}",
        "state/current",
    ):
        assert fragment in run.out, fragment
    for command in ("status", "logs", "restart", "rollback", "check"):
        other = nas.run(command, TARGET, "--dry-run")
        assert other.code == 0 and other.events == [] and "[dry-run] ssh" in other.out, other.text


def test_remote_folder_option(nas: Nas) -> None:
    nas.play(health=["healthy"], schema=1)
    run = nas.run("deploy", TARGET, *FAST, "--dir", "/volume1/apps/gfx")
    assert run.code == 0, run.text
    assert (nas.root / "volume1/apps/gfx/state/current").exists()
    assert not nas.remote.exists()


# -- .env and secrets ------------------------------------------------------------------------------


def test_env_created_from_example_once_then_never_overwritten(nas: Nas) -> None:
    run, _ = _good(nas)
    env = nas.remote / ".env"
    assert env.read_text() == (nas.repo / "deploy" / ".env.example").read_text()
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    assert "Fill these in" in run.err and "GFX_SYNC_SUPABASE_URL" in run.err
    env.write_text(f"GFX_SYNC_SUPABASE_SECRET_KEY={NAS_SECRET}\nHEALTH_PORT=8181\n")
    nas.change()
    nas.play(health=["healthy"], schema=1)
    again = nas.deploy()
    assert again.code == 0, again.text
    assert env.read_text() == f"GFX_SYNC_SUPABASE_SECRET_KEY={NAS_SECRET}\nHEALTH_PORT=8181\n"
    assert "Fill these in" not in again.text
    assert "dashboard: http://nas.example:8181/" in again.out
    # compose reads the one .env through the release's deploy/.env
    release_env = nas.remote / "releases" / _tag_of(again) / "deploy" / ".env"
    assert release_env.is_symlink() and release_env.resolve() == env.resolve()


def test_existing_env_from_a_manual_install_is_adopted(nas: Nas) -> None:
    legacy = nas.remote / "deploy" / ".env"
    legacy.parent.mkdir(parents=True)
    legacy.write_text(f"GFX_SYNC_SUPABASE_SECRET_KEY={NAS_SECRET}\n")
    run, _ = _good(nas)
    assert (nas.remote / ".env").read_text() == legacy.read_text()
    assert legacy.read_text() == f"GFX_SYNC_SUPABASE_SECRET_KEY={NAS_SECRET}\n"
    assert "Fill these in" not in run.text


def test_env_and_token_never_shipped_or_printed(nas: Nas) -> None:
    (nas.remote).mkdir(parents=True)
    (nas.remote / ".env").write_text(
        f"GFX_SYNC_SUPABASE_SECRET_KEY={NAS_SECRET}\nGFX_SYNC_DASHBOARD_TOKEN={TOKEN_SECRET}\n"
    )
    (nas.repo / "notes.txt").write_text("untracked, not ignored: shipped\n")
    run, tag = _good(nas)
    (tar,) = nas.shipped_tars()
    assert {"app.py", "Dockerfile", "deploy/nas", "deploy/.env.example", "notes.txt"} <= set(tar)
    assert not [n for n in tar if n.endswith(".env") or ".venv" in n], sorted(tar)
    for name, content in tar.items():
        assert LOCAL_SECRET.encode() not in (content or b""), name
        assert TOKEN_SECRET.encode() not in (content or b""), name
    assert "?token=" in run.out and TOKEN_SECRET not in run.out
    others = [nas.run(c, TARGET) for c in ("status", "check", "logs")]
    for result in [run, *others]:
        logged = json.dumps(result.events)
        for secret in (NAS_SECRET, LOCAL_SECRET, TOKEN_SECRET):
            assert secret not in result.text and secret not in logged
    assert (nas.remote / "releases" / tag / "notes.txt").exists()


# -- rollback --------------------------------------------------------------------------------------


def _two_versions(nas: Nas, schemas: tuple[int, int]) -> tuple[str, str]:
    _, first = _good(nas)
    nas.change()
    nas.play(health=["healthy"], schema=schemas[1], schemas={first: schemas[0]})
    run = nas.deploy()
    assert run.code == 0, run.text
    return first, _tag_of(run)


def test_rollback_to_the_previous_tag(nas: Nas) -> None:
    first, second = _two_versions(nas, (1, 1))
    nas.play(health=["healthy"], schema=1)
    run = nas.run("rollback", TARGET, *FAST)
    assert run.code == 0, run.text
    assert run.steps() == ["schema", f"up {first}", "tag-latest", "wait"]
    assert (nas.state("current"), nas.state("previous")) == (first, second)
    assert f"rolled back to trio-gfxsync:{first}" in run.out
    _assert_queue_kept(run)


def test_rollback_across_a_queue_schema_change_needs_force(nas: Nas) -> None:
    first, second = _two_versions(nas, (1, 2))
    nas.play(health=["healthy"], schema=2, schemas={first: 1})
    refused = nas.run("rollback", TARGET, *FAST)
    assert refused.code != 0
    assert "refused" in refused.err and "queue schema 1" in refused.err
    assert "user_version only moves forward" in refused.err and "--force" in refused.err
    assert not [a for a in refused.docker() if a[0] == "compose"]
    assert nas.state("current") == second

    forced = nas.run("rollback", TARGET, *FAST, "--force")
    assert forced.code == 0, forced.text
    assert f"up {first}" in forced.steps()
    assert nas.state("current") == first


def test_failed_deploy_does_not_roll_back_across_a_schema_change(nas: Nas) -> None:
    _, first = _good(nas)
    nas.change()
    nas.play(ups=[["unhealthy"]], schema=2, schemas={first: 1})
    run = nas.deploy()
    assert run.code != 0
    assert "not rolled back" in run.err and "user_version only moves forward" in run.err
    assert [s for s in run.steps() if s.startswith("up")] == [f"up {_tag_of(run)}"]


def test_rollback_with_images_that_do_not_know_version_is_allowed(nas: Nas) -> None:
    first, _ = _two_versions(nas, (1, 1))
    nas.play(health=["healthy"])  # no schema: `trio-gfxsync version` fails in both images
    run = nas.run("rollback", TARGET, *FAST)
    assert run.code == 0, run.text
    assert "queue schema unknown" in run.out and nas.state("current") == first


def test_rollback_without_a_previous_version_says_so(nas: Nas) -> None:
    _good(nas)
    run = nas.run("rollback", TARGET, *FAST)
    assert run.code != 0 and "no previous version" in run.err


# -- the other commands ----------------------------------------------------------------------------


LOG_LINES = [
    '{"ts":"2026-01-01T00:00:00Z","level":"info","logger":"agent","event":"agent_started"}',
    '{"ts":"2026-01-01T00:00:01Z","level":"warning","logger":"scanner","event":"subfolder_unreadable","pc_id":"PC01"}',
    '{"ts":"2026-01-01T00:00:02Z","level":"debug","logger":"uploader","event":"batch_sent"}',
    '{"ts":"2026-01-01T00:00:03Z","level":"error","logger":"uploader","event":"record_refused","pc_id":"PC02"}',
    "Traceback (most recent call last):",
]


def test_logs_errors_keeps_only_non_info_lines(nas: Nas) -> None:
    nas.play(logs=LOG_LINES)
    plain = nas.run("logs", TARGET, "--tail", "50")
    assert plain.code == 0, plain.text
    assert plain.out.splitlines() == LOG_LINES
    assert plain.docker() == [["logs", "--tail", "50", "trio-gfxsync"]]
    errors = nas.run("logs", TARGET, "--errors")
    assert errors.code == 0, errors.text
    assert errors.out.splitlines() == [LOG_LINES[1], LOG_LINES[3], LOG_LINES[4]]
    follow = nas.run("logs", TARGET, "-f", "--errors")
    assert follow.docker() == [["logs", "--tail", "200", "-f", "trio-gfxsync"]]


def test_check_dlq_status_restart_go_through_the_container(nas: Nas) -> None:
    _, first = _good(nas)
    nas.play(health=["healthy"])
    check = nas.run("check", TARGET)
    assert check.code == 0 and "in container: trio-gfxsync check" in check.out
    assert nas.run("dlq", TARGET, "list").docker() == [
        ["exec", "trio-gfxsync", "trio-gfxsync", "dlq", "list"]
    ]
    assert nas.run("dlq", "replay", "--all", TARGET).docker() == [
        ["exec", "trio-gfxsync", "trio-gfxsync", "dlq", "replay", "--all"]
    ]
    assert nas.run("dlq", TARGET, "replay", "7").docker()[0][-2:] == ["replay", "7"]
    assert nas.run("dlq", TARGET, "purge", "7").code == 2
    from_env = nas.run("dlq", "list", env={"NAS_TARGET": TARGET})
    assert from_env.code == 0 and from_env.events[0]["target"] == TARGET, from_env.text
    status = nas.run("status", TARGET)
    assert status.code == 0, status.text
    assert (
        f"deployed: {first}" in status.out and "dashboard: http://nas.example:8080/" in status.out
    )
    restart = nas.run("restart", TARGET, *FAST)
    assert restart.code == 0, restart.text
    up = [a for a in restart.docker() if a[0] == "compose"]
    assert up and "--force-recreate" in up[0] and restart.steps() == [f"up {first}", "wait"]


def test_sudo_mode_prefixes_only_docker(nas: Nas) -> None:
    nas.play(ups=[["healthy"]], schema=1)
    run = nas.deploy("--sudo")
    assert run.code == 0, run.text
    tag = _tag_of(run)
    sudo_runs = [e["argv"] for e in run.events if e["kind"] == "sudo"]
    assert sudo_runs and all(argv[0] == "-n" for argv in sudo_runs)
    commands = [next(a for a in argv[1:] if "=" not in a) for argv in sudo_runs]
    assert all(Path(command).name == "docker" for command in commands), commands
    assert all(e["sudo"] for e in run.events if e["kind"] == "docker")
    up = next(e for e in run.events if e["kind"] == "docker" and "up" in e["argv"])
    assert up["image_env"] == f"trio-gfxsync:{tag}", "the tag reaches compose through sudo"
    for command in run.ssh:
        for match in re.finditer(r"sudo\b", command):
            rest = command[match.start() :]
            assert re.match(r'sudo -n (GFXSYNC_IMAGE=\S+ )?"\$D" ', rest), command
    stream = next(c for c in run.ssh if "tar -xf -" in c)
    assert "sudo" not in stream, "tar and file writes never run as root"
    again = nas.run("deploy", TARGET, *FAST, env={"NAS_SUDO": "1"})
    assert "no change" in again.out and [e for e in again.events if e["kind"] == "sudo"]


def test_image_built_here_and_shipped_for_a_nas_without_internet(nas: Nas) -> None:
    nas.play(health=["healthy"], schema=1)
    run = nas.deploy("--image")
    assert run.code == 0, run.text
    tag = _tag_of(run)
    local = run.docker("local")
    assert [a[0] for a in local] == ["build", "save"]
    assert local[0][local[0].index("--platform") + 1] == "linux/amd64"
    assert local[0][-1] == "-", "built from the same tar that is streamed"
    assert not [a for a in run.docker() if a[0] == "build"], "nothing is built on the NAS"
    assert run.steps() == ["stream", "load", "tag", f"up {tag}", "wait", "tag-latest"]
    load = next(c for c in run.ssh if c.endswith(" load"))
    assert "docker" in load


def test_usage_errors(nas: Nas) -> None:
    assert nas.run().code == 2
    assert nas.run("deploy").code == 2
    assert nas.run("frobnicate", TARGET).code == 2
    assert nas.run("deploy", TARGET, "--timeout", "soon").code == 2
    assert nas.run("deploy", TARGET, "--dir", "relative/path").code == 2
    assert nas.run("--help").code == 0
