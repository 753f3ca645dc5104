"""Sampling parameters shared by chat and legacy completions, checked once."""

from __future__ import annotations

from tunery.errors import InvalidRequest
from tunery.inference.engine import SamplingParams
from tunery.protocol.chat import MAX_STOP_SEQUENCES


def sampling_params(request, max_tokens: int | None) -> SamplingParams:
    """The engine's parameters from a chat or completion request (OpenAI's defaults: temperature
    and top_p 1); the parameters not served yet are refused rather than ignored."""
    for name in ("stream", "echo", "logprobs"):
        if getattr(request, name, None):
            raise InvalidRequest(f"{name} is not supported yet.", param=name)
    stop = (request.stop,) if isinstance(request.stop, str) else tuple(request.stop or ())
    if len(stop) > MAX_STOP_SEQUENCES:
        raise InvalidRequest(f"stop takes at most {MAX_STOP_SEQUENCES} sequences.", param="stop")
    return SamplingParams(
        max_tokens=max_tokens,
        temperature=1.0 if request.temperature is None else request.temperature,
        top_p=1.0 if request.top_p is None else request.top_p, stop=stop, seed=request.seed,
    )
