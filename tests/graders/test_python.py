"""Python graders through the official client: off by default (a 400 saying how to turn them on);
on, each runs in a process of its own: a correct grader's reward, and a grader that loops, that
allocates 10 GB, that raises, that looks for the server's keys, that writes in its folder or that
connects to the server itself, each with its error flag (reward 0) while the server goes on; and
the sandbox's walls: no other process's environment, no way back into the server's network, no
signal to the server, no child outliving the time limit, no fork bomb, no write to the server's
files."""

from __future__ import annotations

import os
import signal
import time

import openai
import pytest

from tunery.graders.sandbox import network_isolation


def python(source: str) -> dict:
    return {"type": "python", "name": "code", "source": source}


EXACT = python("def grade(sample, item):\n"
               "    return 1.0 if sample['output_text'] == item['answer'] else 0.0\n")


@pytest.fixture
def on(python_server):
    return python_server.client()


def test_python_graders_are_off_unless_the_server_turns_them_on(grade):
    with pytest.raises(openai.BadRequestError) as refused:
        grade(EXACT, "Paris", {"answer": "Paris"})
    assert refused.value.body["param"] == "grader.type" and refused.value.body["code"] == "python_graders_disabled"
    assert "TUNERY_PYTHON_GRADERS=on" in refused.value.body["message"]


def test_a_correct_grader_gives_its_reward(grade, on):
    assert grade(EXACT, "Paris", {"answer": "Paris"}, on=on).reward == 1.0
    assert grade(EXACT, "Rome", {"answer": "Paris"}, on=on).reward == 0.0
    sample = python("def grade(sample, item):\n"
                    "    assert sorted(sample) == ['choices', 'output_json', 'output_text', 'output_tools']\n"
                    "    return sample['output_json']['score'] * item['weight']\n")
    result = grade(sample, '{"score": 0.5}', {"weight": 3}, on=on)
    assert result.reward == 1.5 and result.metadata.type == "python" and result.metadata.scores == {"code": 1.5}
    multi = {"type": "multi", "name": "m", "calculate_output": "code * 2", "graders": {"code": EXACT}}
    assert grade(multi, "Paris", {"answer": "Paris"}, on=on).reward == 2.0


def test_validate_checks_the_source(on):
    assert on.fine_tuning.alpha.graders.validate(grader=EXACT).grader.source == EXACT["source"]
    for source, says in (("def grade(:\n", "not Python (line 1)"), ("def score(sample, item):\n    return 1\n",
                                                                     "define a function grade")):
        with pytest.raises(openai.BadRequestError) as refused:
            on.fine_tuning.alpha.graders.validate(grader=python(source))
        assert refused.value.body["param"] == "grader.source" and says in refused.value.body["message"]


def test_a_grader_that_loops_times_out_and_the_server_goes_on(python_server, grade, on):
    limit = float(python_server.env["TUNERY_PYTHON_GRADER_TIMEOUT_SECONDS"])
    started = time.monotonic()
    result = grade(python("def grade(sample, item):\n    while True:\n        pass\n"), "x", on=on)
    assert limit <= time.monotonic() - started < limit + 10
    errors = result.metadata.errors
    assert result.reward == 0.0 and errors.python_grader_server_error and errors.python_grader_server_error_type == "timeout"
    assert grade(EXACT, "Paris", {"answer": "Paris"}, on=on).reward == 1.0


def test_a_grader_that_allocates_10_gb_fails_with_memory_error_and_the_server_goes_on(grade, on):
    result = grade(python("def grade(sample, item):\n    hoard = bytearray(10 * 1024 ** 3)\n    return 1.0\n"), "x", on=on)
    errors = result.metadata.errors
    assert result.reward == 0.0 and errors.python_grader_runtime_error
    assert "MemoryError" in errors.python_grader_runtime_error_details and "512 MB" in errors.python_grader_runtime_error_details
    growing = grade(python("def grade(sample, item):\n    hoard = []\n    while True:\n        hoard.append(bytearray(10 ** 8))\n"),
                    "x", on=on)
    assert growing.metadata.errors.python_grader_runtime_error
    assert grade(EXACT, "Paris", {"answer": "Paris"}, on=on).reward == 1.0


def test_a_grader_that_raises_reports_its_error(grade, on):
    result = grade(python("def grade(sample, item):\n    return item['missing']\n"), "x", {"answer": "x"}, on=on)
    errors = result.metadata.errors
    assert result.reward == 0.0 and errors.python_grader_runtime_error and not errors.python_grader_server_error
    assert 'grader.py", line 2, in grade' in errors.python_grader_runtime_error_details
    assert "KeyError: 'missing'" in errors.python_grader_runtime_error_details
    not_a_number = grade(python("def grade(sample, item):\n    return 'high'\n"), "x", on=on).metadata.errors
    assert "returned str, not a number" in not_a_number.python_grader_runtime_error_details


def test_a_grader_sees_no_key_of_the_servers_and_an_empty_folder(python_server, grade, on):
    source = ("import os\n"
              "def grade(sample, item):\n"
              "    seen = ' '.join(f'{k}={v}' for k, v in os.environ.items())\n"
              "    assert 'sk-' not in seen and 'TUNERY' not in seen, seen\n"
              "    assert os.listdir('.') == [], os.listdir('.')\n"
              "    open('scratch.txt', 'w').write('a grader may write in its own folder')\n"
              "    return 1.0\n")
    result = grade(python(source), "x", on=on)
    assert result.reward == 1.0, result.metadata.errors.python_grader_runtime_error_details
    assert python_server.env["OPENAI_API_KEY"] not in str(result.model_dump())


@pytest.mark.skipif(not network_isolation(), reason="this kernel lets no process leave the network (no network namespaces)")
def test_a_grader_cannot_connect_even_to_the_server_itself(python_server, grade, on):
    source = ("import socket\n"
              "def grade(sample, item):\n"
              f"    socket.create_connection(('127.0.0.1', {python_server.port}), timeout=2).close()\n"
              "    return 1.0\n")
    result = grade(python(source), "x", on=on)
    assert result.reward == 0.0 and "OSError" in result.metadata.errors.python_grader_runtime_error_details


def test_a_grader_reads_no_other_process_s_environment(python_server, grade, on):
    """Every /proc/<pid>/environ it can open, the server's and its parent's included: its reward is
    how many hold a key or a TUNERY_ setting (the old sandbox read the server's)."""
    source = ("import os\n"
              "def grade(sample, item):\n"
              f"    pids = {{os.getppid(), {python_server.process.pid}}} | {{int(p) for p in os.listdir('/proc') if p.isdigit()}}\n"
              "    found = 0\n"
              "    for pid in pids:\n"
              "        try:\n"
              "            seen = open(f'/proc/{pid}/environ', 'rb').read()\n"
              "        except OSError:\n"
              "            continue\n"
              "        found += b'sk-secret-of-the-server' in seen or b'TUNERY_' in seen\n"
              "    return found\n")
    result = grade(python(source), "x", on=on)
    assert not result.metadata.errors.python_grader_runtime_error, result.metadata.errors.python_grader_runtime_error_details
    assert result.reward == 0.0


@pytest.mark.skipif(not network_isolation(), reason="this kernel lets no process leave the network (no network namespaces)")
def test_a_grader_cannot_go_back_into_the_server_s_network(python_server, grade, on):
    source = ("import ctypes, os, socket\n"
              "def grade(sample, item):\n"
              "    libc = ctypes.CDLL(None, use_errno=True)\n"
              "    failures = []\n"
              f"    for pid in (os.getppid(), {python_server.process.pid}, 1):\n"
              "        try:\n"
              "            fd = os.open(f'/proc/{pid}/ns/net', os.O_RDONLY)\n"
              "        except OSError as exc:\n"
              "            failures.append(repr(exc))\n"
              "            continue\n"
              "        if libc.setns(fd, 0x40000000) != 0:\n"
              "            failures.append(f'setns errno {ctypes.get_errno()}')\n"
              "            continue\n"
              "        try:\n"
              f"            socket.create_connection(('127.0.0.1', {python_server.port}), timeout=2).close()\n"
              "            return 1.0\n"
              "        except OSError as exc:\n"
              "            failures.append(repr(exc))\n"
              "    raise OSError('no way back: ' + '; '.join(failures))\n")
    result = grade(python(source), "x", on=on)
    assert result.reward == 0.0 and "no way back" in result.metadata.errors.python_grader_runtime_error_details


def test_a_grader_cannot_signal_the_server(python_server, grade, on):
    source = ("import os, signal\n"
              "def grade(sample, item):\n"
              f"    for pid in ({python_server.process.pid}, os.getppid()):\n"
              "        try:\n"
              "            os.kill(pid, signal.SIGKILL)\n"
              "        except OSError:\n"
              "            pass\n"
              "    return 1.0\n")
    grade(python(source), "x", on=on)
    assert python_server.process.poll() is None
    assert grade(EXACT, "Paris", {"answer": "Paris"}, on=on).reward == 1.0


def _processes_with(marker: bytes) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if marker in open(f"/proc/{pid}/cmdline", "rb").read():
                found.append(int(pid))
        except OSError:
            pass
    return found


def test_what_a_grader_starts_in_a_session_of_its_own_ends_with_it(grade, on):
    """A child that leaves the grader's session (setsid) and sleeps: gone once the grader timed out."""
    marker = "987.654321"
    source = ("import os, time\n"
              "def grade(sample, item):\n"
              "    if os.fork() == 0:\n"
              "        os.setsid()\n"
              f"        os.execv('/bin/sleep', ['sleep', '{marker}'])\n"
              "    while True:\n"
              "        pass\n")
    result = grade(python(source), "x", on=on)
    assert result.metadata.errors.python_grader_server_error_type == "timeout"
    deadline = time.monotonic() + 5
    while _processes_with(marker.encode()) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = _processes_with(marker.encode())
    for pid in left:  # the old sandbox's escapee: not left behind by a failing test
        os.kill(pid, signal.SIGKILL)
    assert not left


def test_a_fork_bomb_ends_with_an_error_and_the_server_goes_on(python_server, grade, on):
    """1000 sleeping children: past the process limit a fork fails (the old sandbox let them all start)."""
    source = ("import os, time\n"
              "def grade(sample, item):\n"
              "    for _ in range(1000):\n"
              "        if os.fork() == 0:\n"
              "            time.sleep(30)\n"
              "            os._exit(0)\n"
              "    return 1.0\n")
    result = grade(python(source), "x", on=on)
    errors = result.metadata.errors
    assert result.reward == 0.0 and errors.python_grader_runtime_error
    assert "BlockingIOError" in errors.python_grader_runtime_error_details
    assert python_server.process.poll() is None
    assert grade(EXACT, "Paris", {"answer": "Paris"}, on=on).reward == 1.0


def test_a_grader_cannot_write_the_server_s_files(python_server, grade, on):
    """The data directory (the database, every organization's files) and the rest of the file system."""
    targets = [python_server.data_dir / "written-by-a-grader", python_server.data_dir.parent / "written-by-a-grader"]
    source = ("def grade(sample, item):\n"
              "    failures = []\n"
              f"    for path in {[str(t) for t in targets]!r}:\n"
              "        try:\n"
              "            open(path, 'w').write('x')\n"
              "            return 1.0\n"
              "        except OSError as exc:\n"
              "            failures.append(repr(exc))\n"
              "    raise OSError('not written: ' + '; '.join(failures))\n")
    result = grade(python(source), "x", on=on)
    assert result.reward == 0.0 and "not written" in result.metadata.errors.python_grader_runtime_error_details
    assert not any(target.exists() for target in targets)
