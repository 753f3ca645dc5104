"""The engine shared by every organization: one owner's burst does not starve another's chat (a
slot is taken back, and the sequence that gave it resumes where it was), close() ends what is in
flight, and the torch decoder's KV cache stays within its bound and shrinks back once idle."""

from __future__ import annotations

import time
from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from tunery.inference import fairness
from tunery.inference.decoder import INITIAL_CAPACITY, INITIAL_SLOTS, Decoder
from tunery.inference.engine import MAX_BATCH, Engine
from tunery.inference.types import ContextLengthExceeded, EngineClosed, Finished, SamplingParams
from tunery.weights import Weights

PROMPT = [5, 6, 7]


@pytest.fixture(scope="module")
def gguf_dir(tmp_path_factory):
    """llama.cpp's conversion of the tiny model, made once for the module's engines."""
    return tmp_path_factory.mktemp("gguf")


def wait_until(condition, seconds: float = 10) -> None:
    deadline = time.time() + seconds
    while not condition():
        assert time.time() < deadline, "the engine never got there"
        time.sleep(0.01)


def test_owners_take_turns_the_one_holding_fewest_first_and_only_a_larger_holder_gives_a_slot_back():
    def sequences(owner: str, count: int, generated: int = 0) -> list[SimpleNamespace]:
        return [SimpleNamespace(owner=owner, prompt=[1, 2], generated=[3] * (generated + i)) for i in range(count)]

    a, b, c = sequences("a", 3), sequences("b", 2), sequences("c", 1)
    assert list(fairness.admission_order(a + b + c, Counter(a=2))) == [b[0], c[0], b[1], a[0], a[1], a[2]]
    running = sequences("a", 3, generated=5) + sequences("b", 1)
    assert fairness.victim(c[0], running) is running[0]  # a's, with the least to compute again
    assert fairness.victim(b[0], running) is running[0]  # a holds 3, b 1
    assert fairness.victim(b[0], running[1:]) is None  # a holds 2, b 1: a slot apart, no back and forth
    assert fairness.victim(a[0], running) is None  # never one's own


def test_one_owners_burst_does_not_starve_another_owners_chat(tiny_model_dir, cpu_backend, gguf_dir):
    engine = Engine(device="cpu", dtype="float32", cpu_backend=cpu_backend, gguf_dir=gguf_dir)
    weights = Weights("base", tiny_model_dir)
    # More greedy copies of one prompt than the engine has slots, each for many steps: all the
    # same text, whether a copy ran straight through or gave its slot back and resumed.
    size = MAX_BATCH + 8
    burst = engine.submit(weights, [PROMPT], SamplingParams(max_tokens=24, temperature=0), n=size, owner="org-a")
    next(iter(burst))  # the burst holds every slot
    chat = engine.submit(weights, [[8, 9, 10]], SamplingParams(max_tokens=3, temperature=0), owner="org-b")
    assert chat.collect()[0].completion_tokens == 3
    assert burst.remaining == size  # answered while not one sequence of the burst had finished
    texts = {finished.text for finished in burst.collect()}
    assert len(texts) == 1 and len(texts.pop()) > 0
    engine.close()


def test_closing_the_engine_ends_what_is_in_flight_and_refuses_more(tiny_model_dir, cpu_backend, gguf_dir):
    engine = Engine(device="cpu", dtype="float32", cpu_backend=cpu_backend, gguf_dir=gguf_dir)
    weights = Weights("base", tiny_model_dir)
    running = engine.submit(weights, [PROMPT], SamplingParams(max_tokens=900, temperature=1.0), n=2)
    events = iter(running)
    next(events)
    engine.close()
    with pytest.raises(EngineClosed):
        list(events)
    assert not engine._thread.is_alive()
    with pytest.raises(EngineClosed):
        engine.submit(weights, [PROMPT], SamplingParams(max_tokens=2))


def test_the_kv_cache_grows_for_a_long_request_and_shrinks_back_once_it_ends(tiny_model_dir):
    engine = Engine(device="cpu", dtype="float32", cpu_backend="torch")
    weights = Weights("base", tiny_model_dir)
    stream = engine.submit(weights, [PROMPT], SamplingParams(max_tokens=1000, temperature=1.0), n=8)
    wait_until(lambda: len(engine._active) == 8)
    decoder = engine.models.bases[tiny_model_dir].decoder
    assert (decoder.slots, decoder.capacity) == (8, 1024) and decoder.keys.shape[1::2] == (8, 1024)
    stream.close()
    wait_until(lambda: not engine.busy())
    assert decoder.keys.shape[1::2] == (INITIAL_SLOTS, INITIAL_CAPACITY)  # idle: its memory went back
    engine.close()


def test_the_torch_kv_cache_shrinks_when_what_is_left_needs_a_quarter_of_it(tiny_model_dir):
    decoder = Decoder(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"))
    for slot in range(16):
        assert decoder.reserve(slot, 1000)
    assert decoder.keys.shape[1::2] == (16, 1024)
    for slot in range(15, 4, -1):
        decoder.free(slot)
    assert decoder.keys.shape[1::2] == (16, 1024)  # five slots still need half of it: kept (no churn)
    decoder.prefill(0, list(range(5, 45)), None)
    following = decoder.decode([7], [40], [(None, [0])])
    decoder.free(4)
    assert decoder.keys.shape[1::2] == (4, 1024)  # four need a quarter: the rest goes
    assert torch.equal(decoder.decode([7], [40], [(None, [0])]), following)  # what slot 0 held was kept


def test_sequences_beyond_the_kv_cache_bound_wait_and_a_longer_one_is_refused(tiny_model_dir):
    probe = Decoder(tiny_model_dir, dtype=torch.float32, device=torch.device("cpu"))
    bound = 256 * probe.token_bytes  # 256 positions: less than the model's context of 1024
    engine = Engine(device="cpu", dtype="float32", cpu_backend="torch", kv_cache_bytes=bound)
    weights = Weights("base", tiny_model_dir)
    assert engine.context_length(weights) == 256
    with pytest.raises(ContextLengthExceeded, match="TUNERY_KV_CACHE_MB"):
        engine.submit(weights, [PROMPT], SamplingParams(max_tokens=300))
    # Two of these do not fit together: they run one after the other, the cache within its bound.
    stream = engine.submit(weights, [PROMPT], SamplingParams(max_tokens=150, temperature=1.0, seed=3), n=3)
    finished = []
    for event in stream:
        assert engine.models.bases[tiny_model_dir].decoder.cache_bytes <= bound
        if isinstance(event, Finished):
            finished.append(event)
    assert len(finished) == 3
    engine.close()
