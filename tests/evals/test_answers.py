"""The executor's answer to one item, without a server: a chat template or tokenizer that fails on
an item errs that item (its sample says why); the run goes on. A chat request whose caller was
cancelled while it was being submitted (in a thread) has its stream closed."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
import threading
from types import SimpleNamespace

import jinja2

from tunery.jobs import evals as executor
from tunery.protocol.evals import OutputSample
from tunery.services.eval_runs import ItemOutcome

SOURCE = {"type": "completions", "model": "m", "source": {"type": "file_content", "content": [{"item": {"input": "hi"}}]}}


def _execution(start_chat):
    execution = executor.Execution.__new__(executor.Execution)
    execution.source = executor.DATA_SOURCE.validate_python(SOURCE)
    execution.run = SimpleNamespace(id="evalrun_1", organization_id="org")
    execution.container = SimpleNamespace(chat=SimpleNamespace(start_chat=start_chat))
    return execution


def test_a_chat_template_error_errs_the_item_only():
    def start_chat(org_id, request):
        raise jinja2.TemplateError("Conversation roles must alternate user/assistant/user/assistant/...")

    outcome = ItemOutcome(3, {"input": "hi"}, "error", OutputSample())
    # asyncio.run in a thread of its own: Playwright's sync API keeps a loop running in this one after the console tests
    with ThreadPoolExecutor(1) as thread:
        assert thread.submit(asyncio.run, _execution(start_chat)._answer(outcome)).result() is None
    assert outcome.sample.error.code == "generation_failed"
    assert "Item 3" in outcome.sample.error.message and "roles must alternate" in outcome.sample.error.message


def test_a_request_submitted_after_its_caller_was_cancelled_is_closed():
    submitting, release = threading.Event(), threading.Event()
    stream = SimpleNamespace(cancelled=False)
    stream.close = lambda: setattr(stream, "cancelled", True)

    def start_chat(org_id, request):
        submitting.set()
        release.wait(10)
        return SimpleNamespace(stream=stream)

    async def cancel_while_submitting():
        task = asyncio.ensure_future(executor._started(start_chat, "org", None))
        await asyncio.to_thread(submitting.wait, 10)
        task.cancel()
        await asyncio.sleep(0)
        release.set()

    with ThreadPoolExecutor(1) as thread:  # a thread of its own, as above
        thread.submit(asyncio.run, cancel_while_submitting()).result()  # the loop closes with its default executor: the thread has returned
    assert stream.cancelled
