"""A1111's prompt attention syntax and its weighted, chunked prompt embeddings.

Syntax (AUTOMATIC1111's ``modules/prompt_parser.parse_prompt_attention``): ``(text)`` multiplies
the attention to ``text`` by 1.1, ``((text))`` by 1.21, ``[text]`` divides it by 1.1,
``(text:1.3)`` multiplies it by 1.3; ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` are literal
characters; a bracket left open applies to the rest of the prompt, a closing one without its
opener is text; ``BREAK`` (upper case, a word of its own) ends the current 75-token chunk.

Embeddings (A1111's ``sd_hijack_clip``, emphasis "Original"): each weighted fragment is
tokenized on its own, the tokens are packed into chunks of 75 (a chunk that fills up moves the
words after a comma within its last 20 tokens to the next chunk), each chunk gets BOS/EOS and
padding to 77 and goes through the text encoder on its own; every token's output vector is
multiplied by its weight and the chunk is scaled back to its original mean; the chunks are
concatenated along the sequence. So a prompt longer than 77 tokens is not truncated, and the
negative prompt is padded with empty chunks to the prompt's number of chunks.

Where A1111 differs, on purpose: the parser is linear in the prompt's length (A1111 multiplies
every fragment inside a bracket when it closes: quadratic in the nesting), so weights are
multiplied outer bracket first and can differ from A1111's in the last bits (fragments whose
weights are equal within 1e-12 are merged); a weight's magnitude is kept within
``MAX_WEIGHT``; an explicit weight that is not a number (``(a:1.2.3)``, an exception in A1111) is
text followed by a plain ``)``; ``BREAK`` inside brackets still breaks (A1111 then encodes the
word "BREAK" with weight -1.1).

:func:`prompt_arguments` is what the engine hands the pipeline: the plain text when neither
prompt uses the syntax and both fit one chunk (so the image is exactly plain diffusers'),
otherwise ``prompt_embeds``/``negative_prompt_embeds`` (SDXL: both text encoders and the
pooled embeddings, as its pipeline computes them).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, NamedTuple

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
MAX_WEIGHT = 1000.0  # |weight| is clamped here: deeper nesting means nothing more, and inf would make NaNs
CHUNK_LENGTH = 75  # tokens per chunk, BOS and EOS not counted (A1111)
COMMA_PADDING_BACKTRACK = 20  # A1111's default "comma_padding_backtrack"


class Fragment(NamedTuple):
    text: str
    weight: float


BREAK = Fragment("BREAK", -1.0)  # a chunk boundary, as A1111's parser writes it

# A1111's token regex: escapes, brackets, ":weight)" and runs of plain text. Each alternative
# either matches a fixed string or a run it consumes, so finditer is linear in the text.
_TOKENS = re.compile(r"""
\\\(|
\\\)|
\\\[|
\\]|
\\\\|
\\|
\(|
\[|
:([+-]?[.\d]+)\)|
\)|
]|
[^\\()\[\]:]+|
:
""", re.X)
_BREAK_WORD = re.compile(r"\bBREAK\b")
_SYNTAX = re.compile(r"[()\[\]\\]|\bBREAK\b")


def _clamp(weight: float) -> float:
    if math.isnan(weight):
        return 1.0
    return max(-MAX_WEIGHT, min(MAX_WEIGHT, weight))


def _split_breaks(text: str) -> list[str]:
    """``re.split(r"\\s*\\bBREAK\\b\\s*", text)`` without the regex's quadratic backtracking
    over long runs of white space."""
    parts = _BREAK_WORD.split(text)
    for index in range(len(parts)):
        if index > 0:
            parts[index] = parts[index].lstrip()
        if index < len(parts) - 1:
            parts[index] = parts[index].rstrip()
    return parts


def parse_prompt_attention(text: str) -> list[Fragment]:
    """``text`` as (fragment, weight) pairs, runs of equal weight merged; ``BREAK`` is the pair
    :data:`BREAK`. Linear time: one pass matches the brackets, a second multiplies."""
    events: list[tuple[str, Any]] = []  # ("text", str), ("open", id), ("close", id), ("break", None)
    multipliers: list[float] = []  # of each opening bracket, once it is known
    kinds: list[str] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def add_text(piece: str) -> None:
        for index, part in enumerate(_split_breaks(piece)):
            if index:
                events.append(("break", None))
            events.append(("text", part))

    for match in _TOKENS.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            events.append(("text", token[1:]))
        elif token in ("(", "["):
            (round_open if token == "(" else square_open).append(len(multipliers))
            events.append(("open", len(multipliers)))
            multipliers.append(ROUND_MULTIPLIER if token == "(" else SQUARE_MULTIPLIER)
            kinds.append(token)
        elif weight is not None and round_open:
            try:
                value = float(weight)
            except ValueError:  # "1.2.3": A1111 raises; here the text stays and ")" closes as usual
                add_text(token[:-1])
                value = ROUND_MULTIPLIER
            bracket = round_open.pop()
            multipliers[bracket] = _clamp(value)
            events.append(("close", bracket))
        elif token == ")" and round_open:
            events.append(("close", round_open.pop()))
        elif token == "]" and square_open:
            events.append(("close", square_open.pop()))
        else:
            add_text(token)

    # Second pass: the weight of a fragment is the product of the multipliers of the brackets open
    # around it, kept as one stack of running products per bracket kind (each kind nests).
    products = {"(": [1.0], "[": [1.0]}
    runs: list[tuple[list[str], float] | None] = []  # (pieces, weight); None: BREAK
    for kind, value in events:
        if kind == "text":
            if value:
                weight = _clamp(products["("][-1] * products["["][-1])
                if runs and runs[-1] is not None and math.isclose(runs[-1][1], weight, rel_tol=1e-12):
                    runs[-1][0].append(value)
                else:
                    runs.append(([value], weight))
        elif kind == "break":
            runs.append(None)
        elif kind == "open":
            stack = products[kinds[value]]
            stack.append(_clamp(stack[-1] * multipliers[value]))
        else:
            products[kinds[value]].pop()
    result = [BREAK if run is None else Fragment("".join(run[0]), run[1]) for run in runs]
    return result or [Fragment("", 1.0)]


def has_attention_syntax(text: str) -> bool:
    """Whether ``text`` holds anything the parser reads: brackets, backslashes or ``BREAK``."""
    return bool(_SYNTAX.search(text))


def plain_text(text: str) -> str:
    """The words of ``text`` without the syntax (for CLIP guidance and scores): the fragments
    joined, ``BREAK`` as a space."""
    if not has_attention_syntax(text):
        return text
    return " ".join("".join(part.text for part in group) for group in _groups(parse_prompt_attention(text)))


def _groups(fragments: list[Fragment]) -> list[list[Fragment]]:
    groups: list[list[Fragment]] = [[]]
    for fragment in fragments:
        if fragment is BREAK:
            groups.append([])
        else:
            groups[-1].append(fragment)
    return groups


# ---- tokens and chunks ----


@dataclass
class Chunks:
    """A prompt as the text encoder sees it: chunks of ``chunk_length + 2`` token ids with one
    weight per token (BOS, EOS and padding weigh 1)."""

    tokens: list[list[int]]
    weights: list[list[float]]
    lengths: list[int]  # BOS, the chunk's tokens and EOS: what a tokenizer's attention mask covers

    @property
    def weighted(self) -> bool:
        return any(weight != 1.0 for chunk in self.weights for weight in chunk)


def chunk_length(tokenizer, text_encoder=None) -> int:
    """Tokens per chunk, BOS and EOS excluded: 75 for CLIP (77 positions)."""
    limit = int(min(getattr(tokenizer, "model_max_length", 77) or 77, 10**6))
    positions = getattr(getattr(text_encoder, "config", None), "max_position_embeddings", None)
    if positions:
        limit = min(limit, int(positions))
    return max(1, min(CHUNK_LENGTH, limit - 2))


def tokenize_chunks(tokenizer, fragments: list[Fragment], length: int = CHUNK_LENGTH,
                    comma_backtrack: int = COMMA_PADDING_BACKTRACK) -> Chunks:
    """A1111's ``tokenize_line``: the fragments' tokens packed into chunks of ``length``."""
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    comma = tokenizer.get_vocab().get(",</w>")
    texts = [fragment.text for fragment in fragments if fragment is not BREAK]
    ids = iter(tokenizer(texts, truncation=False, add_special_tokens=False)["input_ids"] if texts else [])
    chunks: list[list[int]] = []
    weights: list[list[float]] = []
    lengths: list[int] = []
    tokens: list[int] = []
    multipliers: list[float] = []
    last_comma = -1

    def close_chunk() -> None:
        nonlocal tokens, multipliers, last_comma
        filler = length - len(tokens)
        padded = [bos] + tokens + [eos] * (filler + 1)
        # SD2's tokenizer pads with another token than EOS: after the first EOS comes padding
        end = 1 + len(tokens)
        chunks.append(padded[:end + 1] + [pad] * (len(padded) - end - 1))
        weights.append([1.0] + multipliers + [1.0] * (filler + 1))
        lengths.append(end + 1)
        tokens, multipliers, last_comma = [], [], -1

    for fragment in fragments:
        if fragment is BREAK:
            close_chunk()
            continue
        for token in next(ids):
            if token == comma:
                last_comma = len(tokens)
            elif (comma_backtrack and len(tokens) == length and last_comma != -1
                  and len(tokens) - last_comma <= comma_backtrack):
                cut = last_comma + 1
                moved_tokens, moved_weights = tokens[cut:], multipliers[cut:]
                tokens, multipliers = tokens[:cut], multipliers[:cut]
                close_chunk()
                tokens, multipliers = moved_tokens, moved_weights
            if len(tokens) == length:
                close_chunk()
            tokens.append(token)
            multipliers.append(fragment.weight)
    if tokens or not chunks:
        close_chunk()
    return Chunks(chunks, weights, lengths)


def pad_chunks(chunks: Chunks, count: int, tokenizer) -> Chunks:
    """``chunks`` followed by empty chunks (BOS, EOS, padding) up to ``count``, as A1111 pads the
    shorter of prompt and negative prompt."""
    if len(chunks.tokens) >= count:
        return chunks
    empty = tokenize_chunks(tokenizer, [Fragment("", 1.0)], len(chunks.tokens[0]) - 2)
    extra = count - len(chunks.tokens)
    return Chunks(chunks.tokens + empty.tokens * extra, chunks.weights + empty.weights * extra,
                  chunks.lengths + empty.lengths * extra)


# ---- embeddings ----


def emphasize(hidden, weights):
    """A1111's emphasis "Original": each token's vector times its weight, then the whole chunk
    scaled back to its original mean. All weights 1: ``hidden`` itself."""
    import torch

    if all(weight == 1.0 for weight in weights):
        return hidden
    original = hidden.float()
    scaled = original * torch.tensor(weights, dtype=torch.float32, device=hidden.device).reshape(1, -1, 1)
    new_mean = scaled.mean()
    if new_mean != 0 and torch.isfinite(new_mean):
        scaled = scaled * (original.mean() / new_mean)
    return scaled.to(hidden.dtype)


def encode_chunks(text_encoder, chunks: Chunks, *, penultimate: bool = False):
    """(hidden states of all chunks concatenated: 1 x (77 n) x D, pooled output of the first
    chunk or ``None``). ``penultimate``: SDXL's layer (``hidden_states[-2]``) instead of the last
    one; the pooled output is the encoder's ``[0]`` when it is 2-D (a projection model's
    ``text_embeds``), as diffusers' SDXL pipeline takes it."""
    import torch

    device = text_encoder.device
    use_mask = bool(getattr(text_encoder.config, "use_attention_mask", False))
    hidden_states, pooled = [], None
    with torch.no_grad():
        for index, (tokens, weights, length) in enumerate(zip(chunks.tokens, chunks.weights, chunks.lengths)):
            ids = torch.tensor([tokens], dtype=torch.long, device=device)
            mask = None
            if use_mask:  # the tokenizer's padding mask: BOS, the tokens, EOS
                mask = torch.zeros_like(ids)
                mask[:, :length] = 1
            if penultimate:
                output = text_encoder(ids, output_hidden_states=True)
                hidden = output.hidden_states[-2]
                if index == 0 and output[0].ndim == 2:
                    pooled = output[0]
            else:
                hidden = text_encoder(ids, attention_mask=mask)[0]
            hidden_states.append(emphasize(hidden, weights))
    return torch.cat(hidden_states, dim=1), pooled


def _encoders(pipe) -> list[tuple[Any, Any]]:
    pairs = [(getattr(pipe, "tokenizer", None), getattr(pipe, "text_encoder", None)),
             (getattr(pipe, "tokenizer_2", None), getattr(pipe, "text_encoder_2", None))]
    return [(tokenizer, encoder) for tokenizer, encoder in pairs if tokenizer is not None and encoder is not None]


def _is_sdxl(pipe) -> bool:
    return hasattr(pipe, "text_encoder_2")


def supports_weighting(pipe) -> bool:
    """Whether the pipeline can take weighted embeddings: a tokenizer and text encoder (SD) or
    both pairs (SDXL), and a ``__call__`` that takes ``prompt_embeds`` (and SDXL's pooled ones)."""
    import inspect

    try:
        parameters = inspect.signature(pipe.__call__).parameters
    except (TypeError, ValueError):
        return False
    if "prompt_embeds" not in parameters or "negative_prompt_embeds" not in parameters:
        return False
    if _is_sdxl(pipe):
        return (getattr(pipe, "text_encoder_2", None) is not None and getattr(pipe, "tokenizer_2", None) is not None
                and "pooled_prompt_embeds" in parameters)
    return len(_encoders(pipe)) == 1


def _token_count(tokenizer, text: str) -> int:
    return len(tokenizer(text, truncation=False, add_special_tokens=False)["input_ids"])


def needs_weighting(pipe, prompt: str, negative_prompt: str | None) -> bool:
    """Whether either prompt uses the syntax (a weight other than 1, ``BREAK``) or is longer
    than one chunk; then the pipeline must get embeddings instead of text."""
    pairs = _encoders(pipe)
    if not pairs:
        return False
    tokenizer, encoder = pairs[0]
    length = chunk_length(tokenizer, encoder)
    for text in (prompt, negative_prompt or ""):
        fragments = parse_prompt_attention(text) if has_attention_syntax(text) else [Fragment(text, 1.0)]
        if len(fragments) != 1 or fragments[0] is BREAK or fragments[0].weight != 1.0:
            return True
        if _token_count(tokenizer, fragments[0].text) > length:
            return True
    return False


def _unescaped(text: str | None) -> str | None:
    """A prompt without weights as the text the parser reads (escapes resolved: ``\\(`` -> ``(``)."""
    if not text or not has_attention_syntax(text):
        return text
    return "".join(fragment.text for fragment in parse_prompt_attention(text))


def weighted_embeddings(pipe, prompt: str, negative_prompt: str | None) -> dict[str, Any]:
    """The pipeline call's embedding arguments for ``prompt`` and ``negative_prompt`` (``None``:
    none, as the engine passes an empty one), both of the same number of chunks."""
    import torch

    positive = parse_prompt_attention(prompt)
    negative = parse_prompt_attention(negative_prompt or "")
    sdxl = _is_sdxl(pipe)
    pairs = _encoders(pipe)
    positive_chunks = [tokenize_chunks(tok, positive, chunk_length(tok, enc)) for tok, enc in pairs]
    negative_chunks = [tokenize_chunks(tok, negative, chunk_length(tok, enc)) for tok, enc in pairs]
    count = max(len(chunks.tokens) for chunks in positive_chunks + negative_chunks)
    embeds, negative_embeds = [], []
    pooled = negative_pooled = None
    for (tokenizer, encoder), mine, theirs in zip(pairs, positive_chunks, negative_chunks):
        hidden, pool = encode_chunks(encoder, pad_chunks(mine, count, tokenizer), penultimate=sdxl)
        embeds.append(hidden)
        pooled = pooled if pooled is not None else pool
        hidden, pool = encode_chunks(encoder, pad_chunks(theirs, count, tokenizer), penultimate=sdxl)
        negative_embeds.append(hidden)
        negative_pooled = negative_pooled if negative_pooled is not None else pool
    prompt_embeds = torch.cat(embeds, dim=-1)
    negative_prompt_embeds = torch.cat(negative_embeds, dim=-1)
    arguments: dict[str, Any] = {}
    if sdxl:
        if negative_prompt is None and pipe.config.get("force_zeros_for_empty_prompt", False):
            negative_prompt_embeds = torch.zeros_like(prompt_embeds)  # as the SDXL pipeline does
            negative_pooled = torch.zeros_like(pooled)
        arguments.update(pooled_prompt_embeds=pooled, negative_pooled_prompt_embeds=negative_pooled)
    arguments.update(prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_prompt_embeds)
    return arguments


def prompt_arguments(pipe, prompt: str, negative_prompt: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the pipeline call's prompt arguments, a record for the metadata).

    Plain prompts -- no weights, no ``BREAK``, one chunk each -- go to the pipeline as text (the
    escapes resolved), so the image is exactly plain diffusers'; the record then says
    ``"weighted": false``. Otherwise the embeddings of :func:`weighted_embeddings`. A pipeline
    that cannot take embeddings (:func:`supports_weighting`) gets the text as it is, syntax and
    all, and the record says why."""
    if not supports_weighting(pipe):
        return ({"prompt": prompt, "negative_prompt": negative_prompt},
                {"weighted": False, "reason": "the model's pipeline cannot take prompt embeddings"})
    if not needs_weighting(pipe, prompt, negative_prompt):
        return ({"prompt": _unescaped(prompt), "negative_prompt": _unescaped(negative_prompt)}, {"weighted": False})
    arguments = weighted_embeddings(pipe, prompt, negative_prompt)
    chunks = arguments["prompt_embeds"].shape[1] // (chunk_length(*_encoders(pipe)[0]) + 2)
    return arguments, {"weighted": True, "emphasis": "Original", "chunks": chunks}
