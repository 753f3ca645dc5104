"""What tests share besides fixtures: the sample data, names, and the steps many tests take
(a `tunery serve` process to drive, uploading a file, waiting for a job, a key for another
organization, the colour-to-fruit toy task). Test modules import from here, never from each other."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from openai import OpenAI
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "examples" / "data"  # the repository's own sample data sets
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SCREENSHOTS = REPO / "test-artifacts" / "console"  # what the browser tests saw, to look at
MARV = (SAMPLE_DATA / "marv.jsonl").read_bytes()
TINY_MODEL = "tiny-llama"
TEST_KEY = "sk-tunery-test-key"
SERVER_START_SECONDS = 120
FINISHED = ("succeeded", "failed", "cancelled")

# The toy task the tiny model learns in a few seconds: a colour's fruit.
COLOR_PAIRS = [("red", "apple"), ("yellow", "banana"), ("green", "lime"), ("purple", "grape")]
COLOR_EXAMPLES = [{"messages": [{"role": "user", "content": color}, {"role": "assistant", "content": fruit}]}
                  for color, fruit in COLOR_PAIRS] * 3
# DPO's preference format: each colour's fruit preferred over the next colour's.
COLOR_PREFERENCES = [{"input": {"messages": [{"role": "user", "content": color}]},
                      "preferred_output": [{"role": "assistant", "content": fruit}],
                      "non_preferred_output": [{"role": "assistant", "content": COLOR_PAIRS[(i + 1) % len(COLOR_PAIRS)][1]}]}
                     for i, (color, fruit) in enumerate(COLOR_PAIRS)] * 3

# Tool and function calls in the training format: a question, a call, its result, an answer.
WEATHER_QUESTION = {"role": "user", "content": "What is the weather in Oslo?"}
WEATHER = {"name": "get_current_weather", "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}
WEATHER_CALL = {"id": "call_1", "type": "function", "function": {"name": "get_current_weather", "arguments": "{\"location\": \"Oslo\"}"}}
TOOL_EXAMPLE = {"messages": [WEATHER_QUESTION, {"role": "assistant", "tool_calls": [WEATHER_CALL]},
                             {"role": "tool", "tool_call_id": "call_1", "content": "-3"},
                             {"role": "assistant", "content": "It is -3 degrees."}],
                "tools": [{"type": "function", "function": WEATHER}], "parallel_tool_calls": False}
FUNCTION_EXAMPLE = {"messages": [WEATHER_QUESTION, {"role": "assistant", "function_call": WEATHER_CALL["function"]},
                                 {"role": "function", "name": "get_current_weather", "content": "-3"},
                                 {"role": "assistant", "content": "It is -3 degrees.", "weight": 1}],
                    "functions": [WEATHER]}


def jsonl(rows: list[dict]) -> bytes:
    """Rows as a JSONL file's bytes."""
    return "\n".join(json.dumps(r) for r in rows).encode()


def upload(client: OpenAI, data: bytes = MARV, name: str = "train.jsonl"):
    """A fine-tune file uploaded through the SDK (the guide's Marv examples by default)."""
    return client.files.create(file=(name, io.BytesIO(data)), purpose="fine-tune")


def wait_until_finished(client: OpenAI, job_id: str, timeout: float = 120):
    """The job once it has succeeded, failed or been cancelled."""
    deadline = time.time() + timeout
    while (job := client.fine_tuning.jobs.retrieve(job_id)).status not in FINISHED:
        assert time.time() < deadline, f"job still {job.status}"
        time.sleep(0.2)
    return job


def assert_answers_colours(client: OpenAI, model: str) -> None:
    """The model, fine-tuned on the colour task, answers each colour with its fruit (greedy)."""
    for color, fruit in COLOR_PAIRS:
        answer = client.chat.completions.create(model=model, temperature=0, max_tokens=3,
                                                messages=[{"role": "user", "content": color}])
        assert answer.choices[0].message.content.startswith(fruit), (color, answer.choices[0].message.content)


def cancel_active_jobs(client: OpenAI) -> None:
    """Cancel every job of the client's organization that is not finished yet."""
    for status in ("validating_files", "queued", "running", "paused"):
        for job in client.fine_tuning.jobs.list(limit=100, extra_query={"status": status}):
            client.fine_tuning.jobs.cancel(job.id)


def write_hub_model(hf_home: Path, repo_id: str, folder: Path, commit: str = "0123456789abcdef" * 2 + "01234567") -> Path:
    """The model in `folder` written into a Hugging Face cache as a download would leave it
    (blobs named by their sha256, a snapshot of links to them, refs/main naming the snapshot)."""
    import hashlib

    repo = Path(hf_home) / "hub" / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    (repo / "blobs").mkdir(exist_ok=True)
    for file in folder.iterdir():
        digest = hashlib.sha256(file.read_bytes()).hexdigest()
        blob = repo / "blobs" / digest
        if not blob.exists():
            shutil.copyfile(file, blob)
        link = snapshot / file.name
        if not link.exists():
            link.symlink_to(Path("..") / ".." / "blobs" / digest)
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def key_for(server: Server, org: str) -> str:
    """A new API key of organization `org` on the server's data directory, made with the CLI."""
    from tunery.cli import app

    result = CliRunner().invoke(app, ["keys", "create", "--org", org, "--data-dir", str(server.data_dir)],
                                env={"TUNERY_DATABASE_URL": server.env.get("TUNERY_DATABASE_URL")})
    assert result.exit_code == 0, result.output
    return result.output.strip()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, data_dir: Path, env: dict[str, str | None]):
        self.data_dir = data_dir
        self.env = {k: v for k, v in {**os.environ, "TUNERY_API_KEY": TEST_KEY, **env}.items() if v is not None}
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.log = open(data_dir.parent / f"server-{self.port}.log", "w+")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tunery", "serve", "--port", str(self.port), "--data-dir", str(data_dir)],
            env=self.env,
            stdout=self.log, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + SERVER_START_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited:\n{self.output()}")
            try:
                if httpx.get(f"http://127.0.0.1:{self.port}/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.time() > deadline:
                raise TimeoutError(f"server did not start:\n{self.output()}")
            time.sleep(0.2)

    def client(self, api_key: str = TEST_KEY) -> OpenAI:
        return OpenAI(base_url=self.base_url, api_key=api_key, max_retries=0, timeout=300)

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.terminate()
        self.process.wait(timeout=60)
        self.log.close()


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def server_factory(root: Path):
    servers: list[Server] = []

    def start(*, base_models: tuple[Path, ...] = (), warm_up: bool = False, env_key: bool = True,
              data_dir: Path | None = None, env: dict[str, str] | None = None) -> Server:
        """env_key=False starts it without TUNERY_API_KEY; data_dir reuses a stopped server's state."""
        data_dir = data_dir or root / f"server-data-{len(servers)}"
        for folder in base_models:  # hard links: a base model is read, never written
            shutil.copytree(folder, data_dir / "base_models" / folder.name, copy_function=_link_or_copy)
        settings = {"TUNERY_WARM_UP": str(warm_up).lower()} | ({} if env_key else {"TUNERY_API_KEY": None})
        server = Server(data_dir, settings | (env or {}))
        servers.append(server)
        return server

    return start, servers


class PostgresCluster:
    """A throwaway PostgreSQL server from PostgreSQL's own binaries (initdb, pg_ctl) in `root`,
    listening on a free local port with trust authentication; as root the server runs as the
    `postgres` user (PostgreSQL refuses to run as root). Unavailable (None from find()) where
    PostgreSQL is not installed: Debian's package puts its binaries in /usr/lib/postgresql/N/bin."""

    def __init__(self, bin_dir: Path, root: Path):
        self.bin_dir, self.root = bin_dir, root
        self.data = root / "cluster"
        self.port = free_port()
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8")
        options = f"-p {self.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(root / "server.log"), "-o", options, "-w", "start")
        self._databases = 0

    @staticmethod
    def find(root: Path) -> PostgresCluster | None:
        candidates = [Path(p).parent for p in [shutil.which("initdb")] if p]
        candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True)
        for bin_dir in candidates:
            if (bin_dir / "initdb").exists() and (bin_dir / "pg_ctl").exists():
                return PostgresCluster(bin_dir, root)
        return None

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.root)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a new, empty database of its own."""
        import psycopg

        self._databases += 1
        name = f"tunery_{os.getpid()}_{self._databases}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def restart(self) -> None:
        """Stopped at once (every connection dropped) and started again with the same options."""
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "server.log"), "-m", "immediate", "-w", "restart")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")


def send_raw(port: int, path: str, body: dict, key: str = TEST_KEY) -> socket.socket:
    """A JSON POST written on a socket of its own: the test reads its answer when it wants, or
    closes the socket to leave without it (a client that goes away)."""
    payload = json.dumps(body).encode()
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                 f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n".encode() + payload)
    return sock

# The console in a browser (Playwright's page): what its tests share.
PAYLOAD = '<script>window.pwned = 1</script><img src=x onerror="window.pwned = 2">'  # must stay text
CELLS = "rows => rows.map(r => [...r.cells].map(c => c.textContent))"  # a table's rows as their cells' text
UNLABELLED = """() => [...document.querySelectorAll('main input, main select, main textarea')]
    .filter(el => el.type !== 'hidden' && !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
    .map(el => el.name || el.outerHTML.slice(0, 80))"""  # the page's form controls that no label names


def sign_in(page, server, key: str = TEST_KEY) -> None:
    page.goto(server.base_url.removesuffix("/v1") + "/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("heading", name="Fine-tuning jobs").wait_for()
