"""Chat and legacy completions: resolve the model (base, fine-tuned or checkpoint of this
organization), generate, and answer in the ChatCompletion or Completion shape."""

from __future__ import annotations

from tunery.errors import InvalidRequest
from tunery.ids import new_id, now
from tunery.inference.engine import ContextLengthExceeded, Engine
from tunery.protocol.chat import ChatChoice, ChatCompletion, ChatCompletionRequest, ChatMessageOut, Usage
from tunery.protocol.completions import Completion, CompletionChoice, CompletionRequest
from tunery.services.sampling import sampling_params
from tunery.services.models import ModelsService


class ChatService:
    def __init__(self, models: ModelsService, engine: Engine):
        self.models = models
        self.engine = engine

    def complete(self, org_id: str, request: ChatCompletionRequest) -> ChatCompletion:
        params = sampling_params(request, request.max_completion_tokens or request.max_tokens)
        model = self.models.resolve(org_id, request.model)
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

    def complete_text(self, org_id: str, request: CompletionRequest) -> Completion:
        params = sampling_params(request, request.max_tokens)
        model = self.models.resolve(org_id, request.model)
        prompts = [request.prompt] if isinstance(request.prompt, str) else request.prompt
        if not prompts:
            raise InvalidRequest("prompt must not be empty.", param="prompt")
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for index, prompt in enumerate(prompts):
            try:
                out = self.engine.complete(model.base_path, model.adapter_path, prompt, params)
            except ContextLengthExceeded as exc:
                raise InvalidRequest(str(exc), param="prompt", code="context_length_exceeded") from None
            choices.append(CompletionChoice(index=index, text=out.text, finish_reason=out.finish_reason))
            prompt_tokens += out.prompt_tokens
            completion_tokens += out.completion_tokens
        return Completion(id=new_id("cmpl"), created=now(), model=request.model, choices=choices,
                          usage=Usage(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                                      total_tokens=prompt_tokens + completion_tokens))
