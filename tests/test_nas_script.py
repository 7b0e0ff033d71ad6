"""deploy/nas (issues 12, 23, 26): deploy, upgrade, watch and roll back the NAS container over SSH.

No Docker engine and no NAS here: the script runs against fakes on PATH. The fake `ssh` records
its argv and runs the remote command with `sh` in a folder standing for the NAS (`/volume1/...`
is mapped under tmp_path, HOME is there too); the fake `docker` records its argv and plays a
scenario (health per started container, a failing build, queue schemas, log lines, what each
version's agent answers to `healthcheck --json`, images built for a uid, the queue volume's
owner); the fake `sudo` records and runs what it is given. All three append to one event log,
so the order of the steps across ssh and docker can be asserted: stream, build, tag, up, wait,
keep or roll back.

The project is a throwaway git repository holding this checkout's deploy files and the script,
so the tests do not depend on (or disturb) the working tree around them.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
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
"""Fake docker: record, keep images, one container and the queue volume in a state file, play
the scenario. Images remember the user they were built for (APP_UID:APP_GID); the volume takes
its owner from the first image that mounts it, as Docker copies it from the image; a container
whose user is not the volume's owner cannot open its queue and turns unhealthy."""
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
    state = {"images": {}, "users": {}, "container": None, "volume_owner": None,
             "scenario": None, "ups": 0, "next_id": 1}
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

def new_id(user):
    state["next_id"] += 1
    image_id = "sha256:%064x" % state["next_id"]
    state["users"][image_id] = user
    return image_id

def opt(name):
    return argv[argv.index(name) + 1] if name in argv else None

def build_user():
    args = dict(a.split("=", 1) for a in argv if a.startswith("APP_"))
    return "%s:%s" % (args.get("APP_UID", "1000"), args.get("APP_GID", "1000"))

def render(template, container):
    image_id = container["image_id"]
    sequence = container["sequence"]
    health = sequence[min(container["polls"], len(sequence) - 1)]
    if "{{.State.Health.Status}}" in template:
        container["polls"] += 1
    for key, value in (("{{.Image}}", image_id), ("{{.State.Status}}", container["status"]),
                       ("{{.Config.User}}", state["users"][image_id]),
                       ("{{.Name}}", "/" + container["name"]),
                       ("{{.Config.Image}}", container["image"]),
                       ("{{.State.Health.Status}}", health),
                       ("{{.State.StartedAt}}", "2026-01-01T00:00:00Z"),
                       ("{{.RestartCount}}", "0")):
        template = template.replace(key, value)
    return template

if scenario.get("docker_denied"):
    fail("permission denied while trying to connect to the Docker daemon socket at "
         "unix:///var/run/docker.sock: Get \"http://%2Fvar%2Frun%2Fdocker.sock/v1.43/images/json\"")
cmd = argv[0] if argv else ""
if cmd == "build":
    if "-" in argv[1:]:
        sys.stdin.buffer.read()
    if scenario.get("build_fail"):
        fail("ERROR: failed to solve: process \"pip wheel\" did not complete successfully")
    state["images"][opt("-t")] = new_id(build_user())
    print("Successfully tagged " + opt("-t"))
elif cmd == "tag":
    source, dest = argv[1], argv[2]
    if source not in state["images"]:
        fail("Error response from daemon: No such image: " + source)
    state["images"][dest] = state["images"][source]
elif cmd == "rmi":
    state["images"].pop(argv[1], None)
elif cmd == "images":
    for name, image_id in sorted(state["images"].items()):
        if name.split(":", 1)[0] == argv[-1]:
            print(name.split(":", 1)[1], image_id)
elif cmd == "image" and argv[1] == "inspect":
    if argv[-1] not in state["images"]:
        fail("Error: No such image: " + argv[-1])
    image_id = state["images"][argv[-1]]
    print(opt("--format").replace("{{.Config.User}}", state["users"][image_id])
          .replace("{{.Id}}", image_id))
elif cmd == "compose" and "run" in argv:
    image = os.environ.get("GFXSYNC_IMAGE")
    if image not in state["images"]:
        fail("pull access denied for %s" % image)
    if state["volume_owner"] is None:
        state["volume_owner"] = state["users"][state["images"][image]]
    entrypoint = opt("--entrypoint")
    assert opt("--user") == "0:0", argv
    if entrypoint == "stat":
        print(state["volume_owner"])
    elif entrypoint == "chown":
        state["volume_owner"] = argv[-2]
elif cmd == "compose" and "stop" in argv:
    state["container"] = None
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
    image_id = state["images"][image]
    if state["volume_owner"] is None:
        state["volume_owner"] = state["users"][image_id]
    if state["volume_owner"] != state["users"][image_id]:
        sequence = ["starting", "unhealthy"]  # sqlite3.OperationalError: readonly database
    running = state["container"]
    if (running is None or running["image_id"] != image_id or running["name"] != "trio-gfxsync"
            or "--force-recreate" in argv):
        state["container"] = {"image": image, "image_id": image_id, "sequence": sequence,
                              "polls": 0, "status": "running", "name": "trio-gfxsync"}
elif cmd == "inspect":
    container = state["container"]
    if container is None or argv[-1] != container["name"]:
        fail("Error: No such object: " + argv[-1])
    print(render(opt("--format"), container))
elif cmd == "run" and "version" in argv:
    image = [a for a in argv if a.startswith("trio-gfxsync:") or a.startswith("sha256:")][0]
    tag = image.split(":", 1)[1] if image.startswith("trio-gfxsync:") else image
    schema = scenario.get("schemas", {}).get(tag, scenario.get("schema"))
    if schema is None:
        fail("trio-gfxsync: error: invalid choice: 'version'", 2)
    print("trio-gfxsync 1.2.3")
    print("queue_schema %d" % schema)
elif cmd == "logs":
    print("\n".join(scenario.get("logs", [])))
elif cmd == "exec":
    container = state["container"]
    if container is None or argv[1] != container["name"]:
        fail("Error response from daemon: No such container: " + argv[1])
    if argv[2:5] == ["trio-gfxsync", "healthcheck", "--json"]:
        tag = container["image"].split(":", 1)[1]
        reports = scenario.get("reports", {})
        report = reports.get(tag) or reports.get("*") or {"status": "healthy", "reason_codes": []}
        if report.get("old_agent"):
            fail("trio-gfxsync: error: unrecognized arguments: --json", 2)
        document = {"status": report["status"], "reasons": report.get("reasons", []),
                    "components": {"supabase": "connected"}}
        if "reason_codes" in report:
            document["reason_codes"] = report["reason_codes"]
        print(json.dumps(document, separators=(",", ":")))
        save()
        sys.exit(0 if report["status"] != "unhealthy" else 1)
    print("in container: " + json.dumps(argv[2:]))
    save()
    sys.exit(scenario.get("exec_exit", 0))
elif cmd == "save":
    image_id = state["images"][argv[1]]
    sys.stdout.write("FAKEIMAGE %s %s\n" % (argv[1], state["users"][image_id]))
elif cmd == "load":
    for line in sys.stdin.read().splitlines():
        _, name, user = line.split()
        state["images"][name] = new_id(user)
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
        """The run as named steps, in order (repeats collapsed: the polls are one `wait`). What
        every command reads first (images, the container) and the queue owner's check are not
        steps; `reasons` is the running version's /health read before anything changes."""
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
                elif argv[0] == "compose" and "chown" in argv:
                    name = "chown-queue"
                elif argv[0] == "inspect" and "{{.State.Health.Status}}" in argv:
                    name = "wait"
                elif argv[0] == "exec" and argv[2:4] == ["trio-gfxsync", "healthcheck"]:
                    name = "wait" if any(n.startswith("up ") for n in names) else "reasons"
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
        result = subprocess.run(
            [*shell.split(), str(self.repo / "deploy" / "nas"), *args],
            capture_output=True,
            text=True,
            env=self._env(env, shell),
            cwd=self.tmp,
            timeout=RUN_TIMEOUT,
            check=False,
        )
        return Run(result.returncode, result.stdout, result.stderr, self.read_events())

    def start(self, *args: str) -> subprocess.Popen[str]:
        """The script as a process of its own session (a laptop's terminal), output piped."""
        return subprocess.Popen(
            [str(self.repo / "deploy" / "nas"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=self._env(None, ""),
            cwd=self.tmp,
            start_new_session=True,
        )

    def read_events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.events.read_text().splitlines()]

    def docker_state(self) -> dict[str, Any]:
        return json.loads((self.tmp / "docker-state.nas").read_text())

    def _env(self, env: dict[str, str] | None, shell: str) -> dict[str, str]:
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
        for name in list(full_env):
            if name.startswith(("DEPLOY_", "NAS_")) and (env is None or name not in env):
                full_env.pop(name)
        if shell:
            full_env["FAKE_REMOTE_SHELL"] = shell
        return full_env

    def deploy(self, *args: str) -> Run:
        return self.run("deploy", TARGET, *FAST, *args)

    @property
    def share(self) -> Path:
        """The PokerGFX share on the NAS, as this machine sees it (/volume1/pokergfx there)."""
        return self.root / "volume1" / "pokergfx"

    def fill_env(self, folder: str = REMOTE, **lines: str) -> Path:
        """A completed .env on the NAS: the example with every placeholder filled in."""
        env = self.root / folder.lstrip("/") / ".env"
        env.parent.mkdir(parents=True, exist_ok=True)
        env.write_text(filled(self.example(), **{"NAS_PATH": str(self.share), **lines}))
        env.chmod(0o600)
        return env

    def example(self) -> str:
        return (self.repo / "deploy" / ".env.example").read_text()

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


COMPLETE = {
    "GFX_SYNC_SUPABASE_URL": "https://abcdefghijklmnop.supabase.co",
    "GFX_SYNC_SUPABASE_SECRET_KEY": NAS_SECRET,
    "APP_UID": "1000",
    "APP_GID": "1000",
}


def filled(text: str, **lines: str) -> str:
    """`text` (an .env) with these lines set, and every other placeholder line completed."""
    values = {**COMPLETE, **lines}
    out = []
    for line in text.splitlines():
        name, sep, _ = line.partition("=")
        if sep and name in values:
            line = f"{name}={values.pop(name)}"
        out.append(line)
    out += [f"{name}={value}" for name, value in values.items()]
    return "\n".join(out) + "\n"


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
    (root / "volume1" / "pokergfx" / "PC01").mkdir(parents=True)
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


# an upgrade's steps up to `up`: what runs is asked for its reason codes before anything changes
UPGRADE = ["reasons", "stream", "build", "tag"]


def _good(nas: Nas) -> tuple[Run, str]:
    if not (nas.remote / ".env").exists() and not (nas.remote / "deploy" / ".env").exists():
        nas.fill_env()
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
    nas.fill_env()
    nas.play(ups=[["starting", "starting", "healthy"]], schema=1)
    run = nas.deploy("--settle", "1")
    assert run.code == 0, run.text
    tag = _tag_of(run)
    assert run.steps() == ["stream", "build", "tag", f"up {tag}", "wait", "tag-latest"]
    assert all(e["target"] == TARGET for e in run.events if e["kind"] == "ssh")
    # the build is tagged with the version and the git revision
    (build,) = only(run, "build")
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
    assert run.steps() == [*UPGRADE, f"up {second}", "wait", "tag-latest"]
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
    assert run.steps() == [*UPGRADE, f"up {second}", "wait", "schema", f"up {first}", "wait"]
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
    nas.fill_env()
    nas.play(health=["starting"], schema=1)
    run = nas.deploy("--timeout", "1")
    assert run.code != 0
    tag = _tag_of(run)
    assert run.steps() == ["stream", "build", "tag", f"up {tag}", "wait"]
    assert "no earlier release to roll back to" in run.err
    # what it advises works: deploy again (restart would say "nothing deployed")
    assert f"deploy/nas deploy {TARGET}" in run.err and f"logs {TARGET} --errors" in run.err
    assert "restart" not in run.err
    assert nas.state("current") == "" and nas.state("failed") == tag
    assert nas.state("pending") == "", "the outcome clears state/pending"


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
    nas.fill_env()
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
    assert run.steps() == ["reasons", "stream", "build"]
    assert "build failed" in run.err and f"trio-gfxsync:{first} (container" in run.err
    assert "is still running" in run.err
    assert "pip wheel" in run.err, "the end of the build output is shown"
    assert nas.state("current") == first


def test_repeated_deploy_with_no_change_restarts_nothing(nas: Nas) -> None:
    _, first = _good(nas)
    nas.play(health=["healthy"], schema=1)
    run = nas.deploy()
    assert run.code == 0, run.text
    assert run.steps() == ["wait"], "only the health is read"
    assert not [a for a in run.docker() if a[0] in ("build", "tag", "compose", "restart", "rm")]
    assert not [a for a in run.docker() if a[0] == "exec"], "nothing asked of the container"
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
    assert run.steps() == [f"up {first}", "wait"]
    assert "no change since" in run.out and "not what runs: starting it" in run.out


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
    (build,) = only(run, "build")
    assert "--no-cache" in build
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
    nas.fill_env("/volume1/apps/gfx")
    nas.play(health=["healthy"], schema=1)
    run = nas.run("deploy", TARGET, *FAST, "--dir", "/volume1/apps/gfx")
    assert run.code == 0, run.text
    assert (nas.root / "volume1/apps/gfx/state/current").exists()
    assert not nas.remote.exists()


# -- .env and secrets ------------------------------------------------------------------------------


def _nothing_built_or_started(run: Run) -> None:
    assert run.code == 1, run.text
    assert not [e for e in run.events if e["kind"] == "ssh" and "tar -xf -" in e["command"]]
    touched = [a for a in run.docker() if a[0] not in ("images", "inspect")]
    assert touched == [], "only read: no build, no tag, no compose, no exec"
    assert "Nothing was built or started" in run.err


def _share_owner(nas: Nas) -> tuple[int, int]:
    """The share's owner as a DSM user's (root can hand it to 1026:100; others keep theirs)."""
    if os.geteuid() == 0:
        os.chown(nas.share, 1026, 100)
    info = nas.share.stat()
    return info.st_uid, info.st_gid


def test_first_deploy_without_env_writes_it_builds_nothing_and_says_what_to_fill(
    nas: Nas,
) -> None:
    uid, gid = _share_owner(nas)
    run = nas.deploy("--nas-path", "/volume1/pokergfx")
    _nothing_built_or_started(run)
    env = nas.remote / ".env"
    assert stat.S_IMODE(env.stat().st_mode) == 0o600
    # the example, with what could be learned on the NAS and nothing else
    expected = re.sub(r"(?m)^NAS_PATH=.*$", "NAS_PATH=/volume1/pokergfx", nas.example())
    expected = re.sub(r"(?m)^APP_UID=.*$", f"APP_UID={uid}", expected)
    expected = re.sub(r"(?m)^APP_GID=.*$", f"APP_GID={gid}", expected)
    # the NAS's name as the venue (the fake NAS is this machine)
    expected = re.sub(
        r"(?m)^#* *GFX_SYNC_VENUE=.*$", f"GFX_SYNC_VENUE={os.uname().nodename}", expected
    )
    assert env.read_text() == expected
    assert f"APP_UID={uid} (the owner of /volume1/pokergfx)" in run.out
    # the lines still to fill in, each with its comment from the example, and nothing else
    listed = re.findall(r"^ {8}([A-Z][A-Z0-9_]*)=", run.err, re.M)
    assert listed == ["GFX_SYNC_SUPABASE_URL", "GFX_SYNC_SUPABASE_SECRET_KEY"], run.err
    assert "        # Project URL from Supabase" in run.err
    # the exact commands: how to edit it, and what to run next (deploy, never restart)
    assert f"ssh -t {TARGET} vi {REMOTE}/.env" in run.err
    assert run.err.rstrip().endswith(f"then run again: deploy/nas deploy {TARGET}")
    assert "restart" not in run.text
    assert nas.state("current") == "" and nas.state("pending") == ""


def test_placeholders_left_stop_the_deploy_again_and_a_completed_env_deploys(nas: Nas) -> None:
    _nothing_built_or_started(nas.deploy())
    env = nas.remote / ".env"
    written = env.read_text()
    again = nas.deploy()
    _nothing_built_or_started(again)
    listed = re.findall(r"^ {8}([A-Z][A-Z0-9_]*)=", again.err, re.M)
    assert listed == [
        "GFX_SYNC_SUPABASE_URL",
        "GFX_SYNC_SUPABASE_SECRET_KEY",
        "NAS_PATH",
        "APP_UID",
        "APP_GID",
    ], again.err
    assert "--nas-path /volume1/<share>" in again.err
    assert env.read_text() == written, "the operator's .env is never rewritten"

    # one placeholder left is enough to stop
    env.write_text(filled(written, NAS_PATH=str(nas.share), APP_GID="<gid>"))
    one_left = nas.deploy()
    _nothing_built_or_started(one_left)
    assert re.findall(r"^ {8}([A-Z][A-Z0-9_]*)=", one_left.err, re.M) == ["APP_GID"]

    completed = filled(written, NAS_PATH=str(nas.share))
    env.write_text(completed)
    nas.play(health=["healthy"], schema=1)
    run = nas.deploy()
    assert run.code == 0, run.text
    assert nas.state("current") == _tag_of(run)
    assert env.read_text() == completed
    assert "Nothing was built" not in run.text
    # compose reads the one .env through the release's deploy/.env
    release_env = nas.remote / "releases" / _tag_of(run) / "deploy" / ".env"
    assert release_env.is_symlink() and release_env.resolve() == env.resolve()


def test_a_share_owned_by_root_lends_no_ids(nas: Nas) -> None:
    """DSM's shares often belong to root (ACLs decide who reads them): uid 0 is never taken."""
    run = nas.deploy("--nas-path", "/usr/share")
    _nothing_built_or_started(run)
    text = (nas.remote / ".env").read_text()
    assert "NAS_PATH=/usr/share\n" in text and "APP_UID=<" in text and "APP_GID=<" in text
    assert "/usr/share belongs to root" in run.err and f"ssh {TARGET} id <user>" in run.err


def test_a_nas_path_that_is_no_folder_stops_the_deploy(nas: Nas) -> None:
    missing = nas.deploy("--nas-path", "/volume1/pokergxf")
    _nothing_built_or_started(missing)
    assert "--nas-path /volume1/pokergxf is not a folder" in missing.err
    assert "NAS_PATH=/volume1/<share>" in (nas.remote / ".env").read_text(), "nothing learned"
    # a completed .env whose NAS_PATH is not there: docker would mount an empty folder
    nas.fill_env(NAS_PATH=str(nas.root / "volume1" / "pokergxf"))
    typo = nas.deploy()
    _nothing_built_or_started(typo)
    assert "pokergxf (from .env) is not a folder" in typo.err


def test_the_nas_name_becomes_the_venue_when_the_example_has_one(nas: Nas) -> None:
    example = nas.repo / "deploy" / ".env.example"
    if "GFX_SYNC_VENUE=" not in example.read_text():
        with example.open("a") as f:
            f.write("# The venue's name in the fleet view.\n# GFX_SYNC_VENUE=\n")
    run = nas.deploy()
    _nothing_built_or_started(run)
    venue = os.uname().nodename  # the fake NAS is this machine: its `uname -n`
    assert f"\nGFX_SYNC_VENUE={venue}\n" in (nas.remote / ".env").read_text()
    assert f"GFX_SYNC_VENUE={venue} (the NAS's host name)" in run.out


def test_an_env_with_the_old_port_name_stops_with_the_command_that_renames_it(nas: Nas) -> None:
    env = nas.fill_env()
    env.write_text(env.read_text().replace("NAS_PORT=", "HEALTH_PORT=").replace("=8080", "=8181"))
    run = nas.deploy()
    _nothing_built_or_started(run)
    assert f"""ssh {TARGET} "sed -i 's/^HEALTH_PORT=/NAS_PORT=/' {REMOTE}/.env\"""" in run.err
    env.write_text(env.read_text().replace("HEALTH_PORT=", "NAS_PORT="))
    nas.play(health=["healthy"], schema=1)
    fixed = nas.deploy()
    assert fixed.code == 0, fixed.text
    assert "dashboard: http://nas.example:8181/" in fixed.out


def test_docker_not_usable_yet_stops_before_anything_with_the_group_steps(nas: Nas) -> None:
    nas.fill_env()
    nas.play(docker_denied=True)
    run = nas.deploy()
    _nothing_built_or_started(run)
    assert "permission denied while trying to connect to the Docker daemon socket" in run.err
    assert "docker group" in run.err and f"ssh -O exit {TARGET}" in run.err


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
    second = _tag_of(run)
    assert "not rolled back" in run.err and "user_version only moves forward" in run.err
    assert [s for s in run.steps() if s.startswith("up")] == [f"up {second}"]
    assert (nas.state("current"), nas.state("failed"), nas.state("pending")) == (first, second, "")
    # what it advises goes back one release, to what ran before, not two
    assert f"deploy/nas rollback {TARGET} --force" in run.err
    nas.play(health=["healthy"], schema=2, schemas={first: 1})
    back = nas.run("rollback", TARGET, *FAST, "--force")
    assert back.code == 0, back.text
    assert [s for s in back.steps() if s.startswith("up")] == [f"up {first}"]
    assert nas.state("current") == first


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


def only(run: Run, command: str) -> list[list[str]]:
    """The NAS's docker calls of one kind (every command first reads images and the container)."""
    return [argv for argv in run.docker() if argv[0] == command]


def test_logs_errors_keeps_only_non_info_lines(nas: Nas) -> None:
    _good(nas)
    nas.play(logs=LOG_LINES)
    plain = nas.run("logs", TARGET, "--tail", "50")
    assert plain.code == 0, plain.text
    assert plain.out.splitlines() == LOG_LINES
    assert only(plain, "logs") == [["logs", "--tail", "50", "trio-gfxsync"]]
    errors = nas.run("logs", TARGET, "--errors")
    assert errors.code == 0, errors.text
    assert errors.out.splitlines() == [LOG_LINES[1], LOG_LINES[3], LOG_LINES[4]]
    follow = nas.run("logs", TARGET, "-f", "--errors")
    assert only(follow, "logs") == [["logs", "--tail", "200", "-f", "trio-gfxsync"]]


def test_check_dlq_status_restart_go_through_the_container(nas: Nas) -> None:
    _, first = _good(nas)
    nas.play(health=["healthy"])
    check = nas.run("check", TARGET)
    assert check.code == 0 and 'in container: ["trio-gfxsync", "check"]' in check.out
    assert only(nas.run("dlq", TARGET, "list"), "exec") == [
        ["exec", "trio-gfxsync", "trio-gfxsync", "dlq", "list"]
    ]
    assert only(nas.run("dlq", "replay", "--all", TARGET), "exec") == [
        ["exec", "trio-gfxsync", "trio-gfxsync", "dlq", "replay", "--all"]
    ]
    assert only(nas.run("dlq", TARGET, "replay", "7"), "exec")[0][-2:] == ["replay", "7"]
    assert nas.run("dlq", TARGET, "purge", "7").code == 2
    from_env = nas.run("dlq", "list", env={"DEPLOY_HOST": TARGET})
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
    assert f"running:  trio-gfxsync:{first} (container trio-gfxsync, running)" in status.out


def test_sudo_mode_prefixes_only_docker(nas: Nas) -> None:
    nas.fill_env()
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
    again = nas.run("deploy", TARGET, *FAST, env={"DEPLOY_SUDO": "1"})
    assert "no change" in again.out and [e for e in again.events if e["kind"] == "sudo"]


def test_image_built_here_and_shipped_for_a_nas_without_internet(nas: Nas) -> None:
    nas.fill_env()
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


def test_usage_errors_name_the_renamed_environment_variables(nas: Nas) -> None:
    """One name per thing: NAS_* is the NAS side of .env now, TARGET is GFX_SYNC_TARGET's."""
    _good(nas)
    for old, new in (("NAS_DIR", "DEPLOY_DIR"), ("NAS_TARGET", "DEPLOY_HOST")):
        run = nas.run("status", TARGET, env={old: "/volume1/elsewhere"})
        assert run.code == 2 and f"{old} is now called {new}" in run.err, run.text
        assert run.events == [], "nothing runs under a name it would have ignored"


# -- exec ------------------------------------------------------------------------------------------


def test_exec_passes_its_words_unchanged_and_its_exit_status(nas: Nas) -> None:
    _good(nas)
    marker = nas.tmp / "expanded"
    words = [
        "trio-gfxsync",
        "reconcile",
        "--apply",
        "--pc",
        "PC 01",
        "it's",
        f"$(touch {marker})",
        "a;b",
        "*",
        "",
        "--dry-run",
    ]
    nas.play(exec_exit=3)
    run = nas.run("exec", TARGET, "--", *words)
    assert only(run, "exec") == [["exec", "trio-gfxsync", *words]]
    assert run.code == 3, "the command's exit status is deploy/nas's"
    assert not marker.exists(), "no word is expanded by either shell"
    assert "[dry-run]" not in run.out, "options after -- belong to the command"
    assert nas.run("exec", TARGET).code == 2
    assert nas.run("status", TARGET, "--", "trio-gfxsync", "scan").code == 2


# -- APP_UID / APP_GID -----------------------------------------------------------------------------


def test_new_app_ids_rebuild_and_hand_the_queue_volume_to_the_new_user(nas: Nas) -> None:
    _, first = _good(nas)
    assert nas.docker_state()["volume_owner"] == "1000:1000"
    env = nas.remote / ".env"
    env.write_text(filled(env.read_text(), APP_UID="1026", APP_GID="100"))
    nas.play(health=["healthy"], schema=1)
    run = nas.deploy()  # the same source: only the ids changed
    assert run.code == 0, run.text
    assert "APP_UID/APP_GID in .env changed (1000:1000 -> 1026:100)" in run.out
    second = nas.state("current")
    assert second.startswith(first + ".r") and nas.state("previous") == first
    (build,) = only(run, "build")
    assert "APP_UID=1026" in build and "APP_GID=100" in build
    assert run.steps()[-4:] == ["chown-queue", f"up {second}", "wait", "tag-latest"]
    stop = next(i for i, a in enumerate(run.docker()) if a[0] == "compose" and "stop" in a)
    chown = next(i for i, a in enumerate(run.docker()) if a[0] == "compose" and "chown" in a)
    assert stop < chown, "the old agent is stopped before its files change owner"
    assert nas.docker_state()["volume_owner"] == "1026:100"
    assert "given to 1026:100" in run.out
    _assert_queue_kept(run)
    # and back: a rollback to the image built for 1000 hands the queue back to it
    nas.play(health=["healthy"], schema=1)
    back = nas.run("rollback", TARGET, *FAST)
    assert back.code == 0, back.text
    assert "chown-queue" in back.steps() and nas.docker_state()["volume_owner"] == "1000:1000"


# -- deploys that cannot strand a venue (issue 23) -------------------------------------------------


def _wait_for_text(proc: subprocess.Popen[str], text: str) -> str:
    """stdout up to `text` (the wait prints its dots on one line: read bytes, not lines)."""
    assert proc.stdout is not None
    seen = b""
    while text.encode() not in seen:
        chunk = os.read(proc.stdout.fileno(), 4096)
        assert chunk, f"the script ended before {text!r}: {seen.decode()}"
        seen += chunk
    return seen.decode()


@pytest.mark.parametrize(("name", "code"), [("SIGINT", 130), ("SIGTERM", 143), ("SIGHUP", 129)])
def test_a_signal_during_the_health_wait_rolls_back_and_records_it(
    nas: Nas, name: str, code: int
) -> None:
    _, first = _good(nas)
    nas.change()
    nas.play(ups=[["starting"], ["healthy"]], schema=1)
    proc = nas.start("deploy", TARGET, "--interval", "0", "--timeout", "60", "--settle", "0")
    try:
        seen = _wait_for_text(proc, "waiting for")
        second = re.search(r"trio-gfxsync:(1\.2\.3-\S+) \(", seen).group(1)  # type: ignore[union-attr]
        assert nas.state("pending") == second, "recorded before compose up"
        proc.send_signal(getattr(signal, name))
        out, err = proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, seen + out + err
    steps = Run(0, "", "", nas.read_events()).steps()
    assert steps[-2:] == [f"up {first}", "wait"], steps
    assert (nas.state("current"), nas.state("failed"), nas.state("pending")) == (first, second, "")
    assert nas.docker_state()["container"]["image"] == f"trio-gfxsync:{first}"
    assert f"interrupted (SIG{name[3:]})" in (nas.remote / "state" / "history").read_text()
    if name != "SIGHUP":  # after a hang-up nobody reads the terminal; the history has it
        assert f"rolled back to trio-gfxsync:{first} because" in err and "interrupted" in err


def test_a_deploy_killed_outright_is_settled_by_the_next_command(nas: Nas) -> None:
    """kill -9 (or a laptop that vanished): no trap runs, state/pending stays; every command
    first settles it with what docker runs, so status names it and rollback goes one back."""
    _, first = _good(nas)
    nas.change()
    nas.play(ups=[["starting"]], schema=1)
    proc = nas.start("deploy", TARGET, "--interval", "0", "--timeout", "60", "--settle", "0")
    try:
        seen = _wait_for_text(proc, "waiting for")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate(timeout=RUN_TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    second = re.search(r"trio-gfxsync:(1\.2\.3-\S+) \(", seen).group(1)  # type: ignore[union-attr]
    assert (nas.state("current"), nas.state("pending")) == (first, second)

    nas.play(health=["healthy"], schema=1)
    status = nas.run("status", TARGET)
    assert status.code == 0, status.text
    assert f"a deploy of trio-gfxsync:{second} was interrupted, and it is what runs" in status.out
    assert f"running:  trio-gfxsync:{second} (container trio-gfxsync, running)" in status.out
    assert f"deployed: {second}" in status.out and f"previous: {first}" in status.out
    assert (nas.state("current"), nas.state("previous"), nas.state("pending")) == (
        second,
        first,
        "",
    )
    rollback = nas.run("rollback", TARGET, *FAST)
    assert rollback.code == 0, rollback.text
    assert [s for s in rollback.steps() if s.startswith("up")] == [f"up {first}"]


def test_a_leftover_pending_that_never_started_is_cleared(nas: Nas) -> None:
    _, first = _good(nas)
    (nas.remote / "state" / "pending").write_text("1.2.3-0000000-000000000000\n")
    nas.play(health=["healthy"], schema=1)
    run = nas.run("restart", TARGET, *FAST)
    assert run.code == 0, run.text
    assert "it is not what runs (trio-gfxsync:" in run.out
    assert nas.state("pending") == "" and nas.state("current") == first
    assert run.steps() == [f"up {first}", "wait"], "restart acts on what runs"


def _unhealthy(*codes: str) -> dict[str, Any]:
    return {
        "status": "unhealthy",
        "reasons": [f"because {c}" for c in codes],
        "reason_codes": codes,
    }


def _unwell_venue(nas: Nas, old: dict[str, Any], new: dict[str, Any]) -> tuple[str, str]:
    """A release running in a venue that is unwell (old's report); a change to deploy."""
    _, first = _good(nas)
    nas.change()
    nas.play(
        ups=[["starting", "unhealthy"], ["unhealthy"]], schema=1, reports={first: old, "*": new}
    )
    return first, ""


def test_a_deploy_into_an_unwell_venue_passes_when_it_adds_no_reason(nas: Nas) -> None:
    first, _ = _unwell_venue(
        nas, _unhealthy("offline_queue_critical"), _unhealthy("offline_queue_critical")
    )
    run = nas.deploy("--settle", "1")
    assert run.code == 0, run.text
    assert "before the deploy it reports unhealthy: offline_queue_critical" in run.out
    assert "for reasons there before the deploy or accepted: offline_queue_critical" in run.out
    assert run.steps()[0] == "reasons", "the old codes are read before anything changes"
    assert nas.state("current") == _tag_of(run) and nas.state("previous") == first


def test_a_deploy_into_an_unwell_venue_rolls_back_on_a_reason_of_its_own(nas: Nas) -> None:
    first, _ = _unwell_venue(
        nas,
        _unhealthy("offline_queue_critical"),
        _unhealthy("offline_queue_critical", "pc_missing:PC01"),
    )
    run = nas.deploy()
    assert run.code == 1, run.text
    assert "of which new: pc_missing:PC01" in run.err
    assert f"rolled back to trio-gfxsync:{first}" in run.err and nas.state("current") == first


def test_accept_lets_an_operator_deploy_into_a_known_problem(nas: Nas) -> None:
    _unwell_venue(nas, _unhealthy("disk_full"), _unhealthy("disk_full", "pc_missing:PC01"))
    run = nas.deploy("--accept", "pc_missing:*,schema_mismatch")
    assert run.code == 0, run.text
    assert "pc_missing:PC01" in run.out


def test_an_agent_without_reason_codes_gives_a_new_version_no_pass(nas: Nas) -> None:
    first, _ = _unwell_venue(nas, {"old_agent": True}, _unhealthy("offline_queue_critical"))
    run = nas.deploy()
    assert run.code == 1, run.text
    assert "it reports no reason codes" in run.out
    assert f"rolled back to trio-gfxsync:{first}" in run.err


def test_an_image_started_outside_deploy_nas_is_named_and_needs_force(nas: Nas) -> None:
    """Container Manager's `up --build` (or compose by hand): :latest rebuilt, its own container."""
    _, first = _good(nas)
    state_file = nas.tmp / "docker-state.nas"
    state = json.loads(state_file.read_text())
    outside = "sha256:" + "e" * 64
    state["images"]["latest"] = outside
    state["images"]["trio-gfxsync:latest"] = outside
    state["users"][outside] = "1000:1000"
    state["container"] = {
        "image": "trio-gfxsync:latest",
        "image_id": outside,
        "sequence": ["healthy"],
        "polls": 0,
        "status": "running",
        "name": "trio-gfxsync-gfxsync-1",
    }
    state_file.write_text(json.dumps(state))
    nas.play(health=["healthy"], schema=1)
    status = nas.run("status", TARGET)
    assert "running:  an image that is no release deploy/nas recorded (sha256:eeeeeeeeeeee" in (
        status.out
    ), status.text
    assert "container trio-gfxsync-gfxsync-1" in status.out
    assert only(status, "exec") == [["exec", "trio-gfxsync-gfxsync-1", "trio-gfxsync", "status"]]
    restart = nas.run("restart", TARGET, *FAST)
    assert restart.code == 1 and "started outside deploy/nas" in restart.err
    refused = nas.run("rollback", TARGET, *FAST)
    assert refused.code == 1 and "--force" in refused.err
    assert not only(refused, "compose")
    forced = nas.run("rollback", TARGET, *FAST, "--force")
    assert forced.code == 0, forced.text
    assert [s for s in forced.steps() if s.startswith("up")] == [f"up {first}"]
    assert nas.docker_state()["container"]["name"] == "trio-gfxsync"
    assert nas.state("current") == first
