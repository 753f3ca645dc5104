"""`tunery chat` (the answer streamed; interactive without a message) and `tunery complete`
(legacy completions, with a table of each token's likeliest alternatives)."""

from __future__ import annotations

from typing import Annotated

import typer

from tunery.cli.client import ApiKey, AsJson, BaseUrl, api_errors, client, console, emit, table


def chat(
    model: Annotated[str, typer.Option("-m", "--model", help="The model to talk to")],
    message: Annotated[str | None, typer.Argument(help="A message; without one, talk interactively")] = None,
    system: Annotated[str | None, typer.Option("--system", help="A system message")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens")] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    base_url: BaseUrl = None, api_key: ApiKey = None,
) -> None:
    """Chat with a model, the answer streamed as it is written."""
    api = client(base_url, api_key)
    messages = [{"role": "system", "content": system}] if system else []
    options = {k: v for k, v in (("max_tokens", max_tokens), ("temperature", temperature)) if v is not None}

    def answer(text: str) -> None:
        messages.append({"role": "user", "content": text})
        said = []
        with api_errors():
            for chunk in api.chat.completions.create(model=model, messages=messages, stream=True, **options):
                delta = chunk.choices[0].delta if chunk.choices else None
                if delta and delta.content:
                    said.append(delta.content)
                    typer.echo(delta.content, nl=False)
                for call in (delta.tool_calls or []) if delta else []:
                    typer.echo(f"[tool call] {call.function.name}({call.function.arguments})", nl=False)
        typer.echo()
        messages.append({"role": "assistant", "content": "".join(said)})

    if message is not None:
        answer(message)
        return
    typer.echo(f"Talking to {model}; an empty line or Ctrl-D ends.", err=True)
    while True:
        try:
            text = input("> ")
        except (EOFError, KeyboardInterrupt):
            typer.echo()
            return
        if not text.strip():
            return
        answer(text)


def complete(
    model: Annotated[str, typer.Option("-m", "--model", help="The model")],
    prompt: Annotated[str, typer.Argument(help="The prompt (legacy completions: no chat template)")],
    max_tokens: Annotated[int, typer.Option("--max-tokens")] = 16,
    stop: Annotated[list[str] | None, typer.Option("--stop", help="A stop sequence (repeatable)")] = None,
    logprobs: Annotated[int | None, typer.Option("--logprobs", help="Show the N likeliest tokens at each step")] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    base_url: BaseUrl = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """Complete a prompt (the legacy completions endpoint)."""
    options = {k: v for k, v in (("stop", stop), ("logprobs", logprobs), ("temperature", temperature)) if v}
    if temperature == 0:
        options["temperature"] = 0
    with api_errors():
        answer = client(base_url, api_key).completions.create(model=model, prompt=prompt, max_tokens=max_tokens, **options)
    if as_json:
        emit(answer, True, None)
        return
    choice = answer.choices[0]
    typer.echo(choice.text)
    if choice.logprobs is not None:
        console.print(table(["token", "logprob", "likeliest"], [
            [repr(token), f"{value:.4f}", ", ".join(f"{k!r} {v:.3f}" for k, v in (top or {}).items())]
            for token, value, top in zip(choice.logprobs.tokens, choice.logprobs.token_logprobs,
                                         choice.logprobs.top_logprobs)]))
