"""Function calling end to end on the embedded SmolLM2 (slow): fine-tuned on the guide's
get_current_weather examples, the model answers a question about a city it never saw with a
tool call whose arguments are valid JSON, and `functions` requests get a `function_call`."""

from __future__ import annotations

import io
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.helpers import wait_until_finished

EXAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "get_current_weather.jsonl"
TOOL = json.loads(EXAMPLES.read_text().splitlines()[0])["tools"][0]
SYSTEM = {"role": "system", "content": "You are a helpful assistant that looks up the weather."}


@pytest.mark.slow
def test_a_model_fine_tuned_on_tool_calls_calls_the_tool_for_a_new_city(smol_server):
    client = smol_server.client()
    training = client.files.create(file=("weather.jsonl", io.BytesIO(EXAMPLES.read_bytes())), purpose="fine-tune")
    # Two epochs at twice the auto learning rate learn it (the auto four take twice as long on a 2-core CPU).
    job = wait_until_finished(client, client.fine_tuning.jobs.create(
        model="SmolLM2-135M-Instruct", training_file=training.id, seed=3,
        hyperparameters={"n_epochs": 2, "learning_rate_multiplier": 2}).id, timeout=600)
    assert job.status == "succeeded", job.error

    # The chats are asked at once: the engine decodes them together.
    model, ask = job.fine_tuned_model, user_asks
    requests = {
        **{city: dict(tools=[TOOL], messages=ask(f"What's the weather like in {city}?")) for city in ("Lisbon", "Oslo")},
        "legacy": dict(functions=[TOOL["function"]], messages=ask("What's the weather like in Lisbon?")),
        # A demanded call comes even for a question the examples never asked.
        "named": dict(tools=[TOOL], tool_choice={"type": "function", "function": {"name": "get_current_weather"}},
                      messages=ask("I am going to Lisbon tomorrow.")),
        "required": dict(tools=[TOOL], tool_choice="required", messages=ask("I am going to Lisbon tomorrow.")),
        "streamed": dict(tools=[TOOL], stream=True, messages=ask("What's the weather like in Lisbon?")),
    }
    with ThreadPoolExecutor(len(requests)) as pool:
        futures = {name: pool.submit(lambda r: client.chat.completions.create(model=model, temperature=0, **r), request)
                   for name, request in requests.items()}
        answers = {name: future.result() for name, future in futures.items()}
        answers["streamed"] = list(answers["streamed"])

    for city in ("Lisbon", "Oslo"):  # not in the training examples
        choice = answers[city].choices[0]
        assert choice.finish_reason == "tool_calls", choice.message
        call = choice.message.tool_calls[0]
        assert call.type == "function" and call.id and call.function.name == "get_current_weather"
        arguments = json.loads(call.function.arguments)
        assert city in arguments["location"] and arguments["format"] in ("celsius", "fahrenheit")

    legacy = answers["legacy"]
    assert legacy.choices[0].finish_reason == "function_call"
    assert legacy.choices[0].message.function_call.name == "get_current_weather"

    for forced in (answers["named"].choices[0], answers["required"].choices[0]):
        assert forced.finish_reason == "tool_calls", forced.message
        assert forced.message.tool_calls[0].function.name == "get_current_weather"
        assert "location" in json.loads(forced.message.tool_calls[0].function.arguments)

    streamed = answers["streamed"]
    calls = [d for c in streamed if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert calls and json.loads(calls[0].function.arguments)["location"].startswith("Lisbon")
    assert streamed[-1].choices[0].finish_reason == "tool_calls"


def user_asks(question: str) -> list[dict]:
    return [SYSTEM, {"role": "user", "content": question}]
