"""Chat completions: resolve the model (base, or fine-tuned of this organization), generate, and
answer in the ChatCompletion shape."""

from __future__ import annotations

from tunery.errors import InvalidRequest
from tunery.ids import new_id, now
from tunery.inference.engine import ContextLengthExceeded, Engine, SamplingParams
from tunery.protocol.chat import MAX_STOP_SEQUENCES, ChatChoice, ChatCompletion, ChatCompletionRequest, ChatMessageOut, Usage
from tunery.services.models import ModelsService


class ChatService:
    def __init__(self, models: ModelsService, engine: Engine):
        self.models = models
        self.engine = engine

    def complete(self, org_id: str, request: ChatCompletionRequest) -> ChatCompletion:
        if request.stream:
            raise InvalidRequest("stream=true is not supported yet.", param="stream")
        model = self.models.resolve(org_id, request.model)
        stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
        if len(stop) > MAX_STOP_SEQUENCES:
            raise InvalidRequest(f"stop takes at most {MAX_STOP_SEQUENCES} sequences.", param="stop")
        params = SamplingParams(
            max_tokens=request.max_completion_tokens or request.max_tokens,
            temperature=1.0 if request.temperature is None else request.temperature,
            top_p=1.0 if request.top_p is None else request.top_p, stop=stop, seed=request.seed,
        )
        messages = [m.model_dump(exclude_none=True) for m in request.messages]
        try:
            out = self.engine.chat(model.base_path, model.adapter_path, messages, params)
        except ContextLengthExceeded as exc:
            raise InvalidRequest(str(exc), param="messages", code="context_length_exceeded") from None
        return ChatCompletion(
            id=new_id("chatcmpl"), created=now(), model=request.model,
            choices=[ChatChoice(index=0, message=ChatMessageOut(content=out.text), finish_reason=out.finish_reason)],
            usage=Usage(prompt_tokens=out.prompt_tokens, completion_tokens=out.completion_tokens,
                        total_tokens=out.prompt_tokens + out.completion_tokens),
        )
