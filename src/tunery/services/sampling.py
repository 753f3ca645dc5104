"""Sampling parameters shared by chat and legacy completions, checked once."""

from __future__ import annotations

from tunery.errors import InvalidRequest
from tunery.inference.types import SamplingParams
from tunery.protocol.chat import MAX_STOP_SEQUENCES


def sampling_params(request, max_tokens: int | None, *, logprobs: int | None = None,
                    prompt_logprobs: bool = False) -> SamplingParams:
    """The engine's parameters from a chat or completion request (OpenAI's defaults: temperature
    and top_p 1, no penalties)."""
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    if len(stop) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(f"stop takes at most {MAX_STOP_SEQUENCES} sequences.", param="stop")
    if any(not s for s in stop):
        raise InvalidRequest("stop sequences must not be empty.", param="stop")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p, stop=stop, seed=request.seed,
        presence_penalty=request.presence_penalty or 0.0, frequency_penalty=request.frequency_penalty or 0.0,
        logprobs=logprobs, prompt_logprobs=prompt_logprobs,
    )
