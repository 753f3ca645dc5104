"""Graders as the API runs them (/v1/fine_tuning/alpha/graders/run and /validate): a grader is
checked (its shape by protocol.graders, what it needs by graders.check, its judge models against
the models this organization may use), then run on the sample and item. Judges are models tunery
serves, called through the chat service in this process (ChatJudge), so gradings under way at the
same time share the engine's batches. grading() gives other services (an eval run's executor) the
same Grading for an organization, to grade many samples at once."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING

from tunery.errors import InvalidRequest, NotFound, TuneryError
from tunery.graders import (GraderResult, Grading, JudgeAnswer, JudgeFailed, JudgeParams, PythonSandbox, Sample, check,
                            judge_models)
from tunery.protocol.chat import ChatCompletionRequest
from tunery.protocol.graders import (AnyGrader, GraderRunMetadata, GraderRunRequest, GraderRunResponse,
                                     GraderValidateRequest, GraderValidateResponse)
from tunery.services.models import ModelsService

if TYPE_CHECKING:
    from tunery.services.chat import ChatService


class ChatJudge:
    """A judge that is a model this organization may use, asked through the chat service."""

    def __init__(self, chat: Callable[[], ChatService], org_id: str):
        self._chat = chat  # the container's: the engine (torch) is made only when a judge is first asked
        self.org_id = org_id

    async def __call__(self, model: str, messages: list[dict[str, str]], params: JudgeParams) -> JudgeAnswer:
        request = ChatCompletionRequest(model=model, messages=messages, max_completion_tokens=params.max_tokens,
                                        temperature=params.temperature, top_p=params.top_p, seed=params.seed)
        try:
            chat = await asyncio.to_thread(self._chat)
            run = await asyncio.to_thread(chat.start_chat, self.org_id, request)
            completion = await chat.chat(run)
        except TuneryError as exc:  # the model gone since the check, a prompt past its context, the server stopping
            raise JudgeFailed(f"{model}: {exc.message}") from None
        return JudgeAnswer(completion.choices[0].message.content or "", completion.usage.prompt_tokens,
                           completion.usage.completion_tokens)


class GradersService:
    def __init__(self, models: ModelsService, chat: Callable[[], ChatService], python: PythonSandbox | None):
        """python: the sandbox python graders run in, None when they are off (TUNERY_PYTHON_GRADERS)."""
        self.models = models
        self._chat = chat
        self.python = python

    def check(self, org_id: str, grader: AnyGrader, param: str = "grader") -> None:
        """Refuse (400 naming the field) a grader that cannot run for this organization."""
        check(grader, python_graders=self.python is not None, param=param)
        for where, model in judge_models(grader, param):
            try:
                self.models.resolve(org_id, model, param=where)
            except NotFound as exc:
                raise InvalidRequest(exc.message, param=where, code=exc.code) from None

    def grading(self, org_id: str) -> Grading:
        """Grading on behalf of this organization: its models judge."""
        return Grading(ChatJudge(self._chat, org_id), self.python)

    def validate(self, org_id: str, request: GraderValidateRequest) -> GraderValidateResponse:
        self.check(org_id, request.grader)
        return GraderValidateResponse(grader=request.grader)

    async def run(self, org_id: str, request: GraderRunRequest) -> GraderRunResponse:
        await asyncio.to_thread(self.check, org_id, request.grader)
        result = await self.grading(org_id).grade(request.grader, Sample.from_text(request.model_sample), request.item)
        return run_response(result)


def run_response(result: GraderResult) -> GraderRunResponse:
    """OpenAI's answer to graders/run: scores are each sub-grader's reward (a multi grader) or the
    grader's own; token usage is the judges'."""
    scores = dict(result.sub_rewards) if result.type == "multi" else {} if result.failed else {result.name: result.reward}
    metadata = GraderRunMetadata(errors=result.errors, execution_time=result.execution_time, name=result.name,
                                 type=result.type, sampled_model_name=result.sampled_model_name, scores=scores,
                                 token_usage=result.token_usage)
    return GraderRunResponse(metadata=metadata, reward=result.reward, sub_rewards=dict(result.sub_rewards),
                             model_grader_token_usage_per_model={m: u.as_dict() for m, u in result.usage.items()})
