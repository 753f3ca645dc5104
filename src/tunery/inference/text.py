"""How the engine's tokens become the text it sends: the tokens that end an answer, a token's
text and bytes (logprobs), and stop sequences (where one begins; how much of the text's end might
begin one, held back while streaming)."""

from __future__ import annotations


def end_tokens(tokenizer) -> set[int]:
    """The tokens that end an answer: end of sequence, and the chat templates' end of turn."""
    ends = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    for name in ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>"):
        token = tokenizer.convert_tokens_to_ids(name)
        if isinstance(token, int) and token != tokenizer.unk_token_id:
            ends.add(token)
    return ends


def token_text(tokenizer, token: int) -> tuple[str, list[int]]:
    """A token's text decoded alone, and its UTF-8 bytes (as logprobs report them)."""
    text = tokenizer.decode([token])
    return text, list(text.encode("utf-8"))


def first_stop(text: str, stops: tuple[str, ...], sent: int) -> int | None:
    """Where the first stop sequence begins in text (searching from just before what was sent)."""
    if not stops:
        return None
    start = max(0, sent - max(len(s) for s in stops))
    found = [i for i in (text.find(s, start) for s in stops) if i != -1]
    return min(found) if found else None


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many characters at the end of text might begin a stop sequence (not sent yet)."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest
