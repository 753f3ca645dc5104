"""Chat and legacy completions: resolve the model (base, fine-tuned or checkpoint of this
organization), render the prompt as training renders it (tools and functions included), hand it
to the engine on behalf of the organization (which the engine shares fairly between them), and
answer in OpenAI's shapes: a ChatCompletion or Completion, or their chunks when streamed.
Everything that can be refused is refused before generation starts; generation cut short by the
server shutting down is a server error saying so."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tunery.data.render import render_generation_prompt
from tunery.data.tools import TOOL_CALL_OPEN, parse_tool_calls, template_renders_tools
from tunery.errors import InvalidRequest, TuneryError
from tunery.ids import new_id, now
from tunery.inference.types import (ContextLengthExceeded, Delta, EngineClosed, Finished, RequestTooLarge, Stream,
                                   UnsupportedModel)
from tunery.inference.types import TokenLogprob as EngineLogprob
from tunery.protocol.chat import (
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatMessageOut,
    ChoiceLogprobs,
    ChunkChoice,
    ChunkDelta,
    FunctionCall,
    ToolCall,
    ToolCallDelta,
    TokenLogprob,
    TopLogprob,
    Usage,
)
from tunery.protocol.completions import Completion, CompletionChoice, CompletionLogprobs, CompletionRequest
from tunery.services.models import ModelsService
from tunery.services.sampling import sampling_params
from tunery.weights import Weights

if TYPE_CHECKING:
    from tunery.inference.engine import Engine  # torch: imported by the container when chat is first used


@dataclass
class ChatRun:
    """A chat completion under way: its engine stream and how to shape what comes back."""
    request: ChatCompletionRequest
    stream: Stream
    offers_tools: bool  # tools or functions were rendered: the answer may be a call
    legacy_functions: bool  # `functions` (not `tools`): a call comes back as `function_call`
    id: str
    created: int
    forced: str = ""  # the start of a call the request demanded (tool_choice), written for the model


@dataclass
class CompletionRun:
    request: CompletionRequest
    stream: Stream
    prompts: list[str]
    id: str
    created: int


class ChatService:
    def __init__(self, models: ModelsService, engine: Engine):
        self.models = models
        self.engine = engine

    # chat ----------------------------------------------------------------------------------------
    def start_chat(self, org_id: str, request: ChatCompletionRequest) -> ChatRun:
        if request.top_logprobs is not None and not request.logprobs:
            raise InvalidRequest("top_logprobs needs logprobs set to true.", param="top_logprobs")
        logprobs = (request.top_logprobs or 0) if request.logprobs else None
        params = sampling_params(request, request.max_completion_tokens or request.max_tokens, logprobs=logprobs)
        weights = self.models.resolve(org_id, request.model).weights
        offered = request.tool_choice != "none" and request.function_call != "none"
        specs = [t["function"] for t in request.tools or [] if isinstance(t, dict) and "function" in t]
        specs += list(request.functions or [])
        messages = [m.model_dump(exclude_none=True) for m in request.messages]
        tokenizer = self.engine.tokenizer(weights)
        prompt = render_generation_prompt(tokenizer, messages, specs if offered else None)
        forced = _forced_call(request, specs, tokenizer) if offered and specs else ""
        if forced:  # the answer starts as a call: the model writes the rest
            prompt = prompt + tokenizer(forced, add_special_tokens=False)["input_ids"]
        stream = self._submit(org_id, weights, [prompt], params, request.n or 1, "messages")
        return ChatRun(request, stream, offered and bool(specs), bool(request.functions) and not request.tools,
                       new_id("chatcmpl"), now(), forced)

    async def chat(self, run: ChatRun) -> ChatCompletion:
        finished = await _finished(run.stream)
        choices = []
        for f in finished:
            message, reason = _message(run, f.text, f.finish_reason)
            logprobs = ChoiceLogprobs(content=[_chat_logprob(t) for t in f.logprobs]) if run.request.logprobs else None
            choices.append(ChatChoice(index=f.index, message=message, finish_reason=reason, logprobs=logprobs))
        return ChatCompletion(id=run.id, created=run.created, model=run.request.model, choices=choices,
                              usage=_usage(finished, run.request.n or 1))

    async def chat_chunks(self, run: ChatRun) -> AsyncIterator[ChatCompletionChunk]:
        """The SDK's chunks: the role first, then text as it is final, then each choice's finish
        reason, and the usage last when stream_options.include_usage asks. An answer that may be
        a tool call is held until it is complete, then sent as content or as calls."""
        def chunk(index: int, delta: ChunkDelta, reason=None, logprobs=None) -> ChatCompletionChunk:
            return ChatCompletionChunk(id=run.id, created=run.created, model=run.request.model, choices=[
                ChunkChoice(index=index, delta=delta, finish_reason=reason, logprobs=logprobs)])

        def logprobs_of(tokens: list[EngineLogprob]) -> ChoiceLogprobs | None:
            return ChoiceLogprobs(content=[_chat_logprob(t) for t in tokens]) if run.request.logprobs else None

        for index in range(run.stream.size):  # every choice, even one already finished
            yield chunk(index, ChunkDelta(role="assistant", content=""))
        finished = []
        try:
            async for event in _events(run.stream):
                if isinstance(event, Delta) and not run.offers_tools:
                    yield chunk(event.index, ChunkDelta(content=event.text), logprobs=logprobs_of(event.logprobs))
                elif isinstance(event, Finished):
                    finished.append(event)
                    reason = event.finish_reason
                    if run.offers_tools:
                        message, reason = _message(run, event.text, event.finish_reason)
                        yield chunk(event.index, _call_delta(message), logprobs=logprobs_of(event.logprobs))
                    yield chunk(event.index, ChunkDelta(), reason)
        finally:
            run.stream.close()  # a client gone mid-stream stops its generation
        if run.request.stream_options and run.request.stream_options.include_usage:
            yield ChatCompletionChunk(id=run.id, created=run.created, model=run.request.model, choices=[],
                                      usage=_usage(finished, run.request.n or 1))

    # legacy completions --------------------------------------------------------------------------
    def start_completion(self, org_id: str, request: CompletionRequest) -> CompletionRun:
        params = sampling_params(request, request.max_tokens, logprobs=request.logprobs,
                                 prompt_logprobs=bool(request.echo))
        weights = self.models.resolve(org_id, request.model).weights
        prompts = [request.prompt] if isinstance(request.prompt, str) else list(request.prompt)
        if not prompts:
            raise InvalidRequest("prompt must not be empty.", param="prompt")
        tokenizer = self.engine.tokenizer(weights)
        ids = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]  # as training tokenized them
        if any(not i for i in ids):
            raise InvalidRequest("prompt must not be empty.", param="prompt")
        stream = self._submit(org_id, weights, ids, params, request.n or 1, "prompt")
        return CompletionRun(request, stream, prompts, new_id("cmpl"), now())

    async def completion(self, run: CompletionRun) -> Completion:
        finished = await _finished(run.stream)
        n = run.request.n or 1
        choices = []
        for f in finished:
            prompt = run.prompts[f.index // n]
            text = prompt + f.text if run.request.echo else f.text
            choices.append(CompletionChoice(index=f.index, text=text, finish_reason=f.finish_reason,
                                            logprobs=self._legacy_logprobs(run, f, prompt)))
        return Completion(id=run.id, created=run.created, model=run.request.model, choices=choices,
                          usage=_usage(finished, run.request.n or 1))

    async def completion_chunks(self, run: CompletionRun) -> AsyncIterator[Completion]:
        def chunk(index: int, text: str, reason=None, logprobs=None) -> Completion:
            return Completion(id=run.id, created=run.created, model=run.request.model, usage=None,
                              choices=[CompletionChoice(index=index, text=text, finish_reason=reason, logprobs=logprobs)])

        n = run.request.n or 1
        finished, offsets = [], {}
        try:
            async for event in _events(run.stream):
                if isinstance(event, Delta):
                    if run.request.echo and event.index not in offsets:
                        yield chunk(event.index, run.prompts[event.index // n])
                    start = offsets.setdefault(event.index, len(run.prompts[event.index // n]) if run.request.echo else 0)
                    logprobs = _legacy(event.logprobs, start, run.request.logprobs) if run.request.logprobs is not None else None
                    offsets[event.index] = start + len(event.text)
                    yield chunk(event.index, event.text, logprobs=logprobs)
                elif isinstance(event, Finished):
                    finished.append(event)
                    if run.request.echo and event.index not in offsets:
                        yield chunk(event.index, run.prompts[event.index // n])
                    yield chunk(event.index, "", event.finish_reason)
        finally:
            run.stream.close()
        if run.request.stream_options and run.request.stream_options.include_usage:
            yield Completion(id=run.id, created=run.created, model=run.request.model, choices=[], usage=_usage(finished, run.request.n or 1))

    def _submit(self, org_id: str, weights: Weights, prompts: list[list[int]], params, n: int, param: str) -> Stream:
        try:
            return self.engine.submit(weights, prompts, params, n, owner=org_id)
        except EngineClosed as exc:
            raise _shutting_down(exc) from None
        except ContextLengthExceeded as exc:
            raise InvalidRequest(str(exc), param=param, code="context_length_exceeded") from None
        except RequestTooLarge as exc:
            raise InvalidRequest(str(exc), param=exc.param, code="request_too_large") from None
        except UnsupportedModel as exc:
            raise InvalidRequest(str(exc), param="model", code="model_not_supported") from None

    @staticmethod
    def _legacy_logprobs(run: CompletionRun, f: Finished, prompt: str) -> CompletionLogprobs | None:
        if run.request.logprobs is None:
            return None
        generated = _legacy(f.logprobs, len(prompt) if run.request.echo else 0, run.request.logprobs, f.text)
        return _join_echo(run, f, prompt, generated) if run.request.echo else generated


def _join_echo(run: CompletionRun, f: Finished, prompt: str, generated: CompletionLogprobs) -> CompletionLogprobs:
    """Echo: the prompt's tokens first. Its first token has no logprob (nothing came before it);
    its text is what the prompt holds before the tokens that follow."""
    scored = [t for t in f.prompt_logprobs if t is not None]
    first = prompt[:max(0, len(prompt) - sum(len(t.token) for t in scored))]
    tokens, offsets, position = [first], [0], len(first)
    for t in scored:
        tokens.append(t.token)
        offsets.append(position)
        position += len(t.token)
    top = [None] + [{x[0]: x[1] for x in t.top[:run.request.logprobs]} for t in scored]
    return CompletionLogprobs(tokens=tokens + generated.tokens,
                              token_logprobs=[None] + [t.logprob for t in scored] + generated.token_logprobs,
                              top_logprobs=top + generated.top_logprobs, text_offset=offsets + generated.text_offset)


def _legacy(tokens: list[EngineLogprob], start: int, top: int, text: str | None = None) -> CompletionLogprobs:
    """The legacy logprobs of tokens whose text starts at offset `start` (only the tokens
    within `text`, when given: a stop sequence may have cut the last ones)."""
    out = CompletionLogprobs(tokens=[], token_logprobs=[], top_logprobs=[], text_offset=[])
    position = start
    for t in tokens:
        if text is not None and position - start >= len(text) and out.tokens:
            break
        out.tokens.append(t.token)
        out.token_logprobs.append(t.logprob)
        out.top_logprobs.append({x[0]: x[1] for x in t.top[:top]})
        out.text_offset.append(position)
        position += len(t.token)
    return out


async def _finished(stream: Stream) -> list[Finished]:
    try:
        return sorted([e async for e in _events(stream) if isinstance(e, Finished)], key=lambda e: e.index)
    finally:
        stream.close()  # also when the caller is cancelled (its client went away): generation stops


async def _events(stream: Stream) -> AsyncIterator[Delta | Finished]:
    """The stream's events; the engine stopping is a server error saying so, and a sequence its
    KV cache cannot hold even alone a refusal."""
    try:
        async for event in stream:
            yield event
    except EngineClosed as exc:
        raise _shutting_down(exc) from None
    except RequestTooLarge as exc:
        raise InvalidRequest(str(exc), param=exc.param, code="request_too_large") from None


def _shutting_down(exc: EngineClosed) -> TuneryError:
    return TuneryError(str(exc), code="server_shutting_down")


def _usage(finished: list[Finished], n: int) -> Usage:
    """A prompt counts once however many choices it has, as OpenAI bills it."""
    prompt_tokens = sum(f.prompt_tokens for f in finished if f.index % n == 0)
    completion = sum(f.completion_tokens for f in finished)
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=completion, total_tokens=prompt_tokens + completion)


def _chat_logprob(t: EngineLogprob) -> TokenLogprob:
    return TokenLogprob(token=t.token, logprob=t.logprob, bytes=t.bytes,
                        top_logprobs=[TopLogprob(token=x[0], logprob=x[1], bytes=x[2]) for x in t.top])


def _message(run: ChatRun, text: str, reason: str) -> tuple[ChatMessageOut, str]:
    """The assistant's message: its text, or the calls it made when tools were offered."""
    if not run.offers_tools:
        return ChatMessageOut(content=text), reason
    content, calls = parse_tool_calls(run.forced + text)
    if not calls:  # no well-formed call: the text as written (a demanded call's start included)
        return ChatMessageOut(content=run.forced + text), reason
    if run.legacy_functions:
        return ChatMessageOut(content=content or None, function_call=FunctionCall(**calls[0])), "function_call"
    return ChatMessageOut(content=content or None, tool_calls=[
        ToolCall(id=new_id("call"), function=FunctionCall(**call)) for call in calls]), "tool_calls"


def _forced_call(request: ChatCompletionRequest, specs: list[dict], tokenizer) -> str:
    """The text an answer must start with when the request demands a call: `tool_choice`
    "required" or a named function (or legacy `function_call` {"name"}). Only for the text
    convention of tools; a template with its own tool format is left to the model."""
    if template_renders_tools(tokenizer.chat_template):
        return ""
    choice = request.tool_choice if request.tools else request.function_call
    if isinstance(choice, dict):
        name = (choice.get("function") or {}).get("name") if "function" in choice else choice.get("name")
        if name not in {spec.get("name") for spec in specs}:
            raise InvalidRequest(f"tool_choice names {name!r}, which is not among the tools given.",
                                 param="tool_choice" if request.tools else "function_call")
        return f'{TOOL_CALL_OPEN}\n{{"name": {json.dumps(name)}, "arguments": '
    if choice == "required":
        return f'{TOOL_CALL_OPEN}\n{{"name": "'
    return ""


def _call_delta(message: ChatMessageOut) -> ChunkDelta:
    calls = [ToolCallDelta(index=i, id=c.id, type="function", function=c.function)
             for i, c in enumerate(message.tool_calls or [])]
    return ChunkDelta(content=message.content, tool_calls=calls or None, function_call=message.function_call)
