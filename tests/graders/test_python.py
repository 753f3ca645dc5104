"""Python graders through the official client: off by default (a 400 saying how to turn them on);
on, each runs in a process of its own: a correct grader's reward, and a grader that loops, that
allocates 10 GB, that raises, that looks for the server's keys, that writes in its folder or that
connects to the server itself, each with its error flag (reward 0) while the server goes on."""

from __future__ import annotations

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
    growing = grade(python("def grade(sample, item):\n    hoard = []\n    while True:\n        hoard.append(b'x' * 10 ** 6)\n"),
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
