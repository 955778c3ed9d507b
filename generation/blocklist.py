"""The prompt blocklist's matcher: normalising prompts, compiling entries, matching with a timeout.

Pure text work with no database: `generation.admission` looks the entries up and applies them,
and `BlocklistEntry.clean` (gallery) uses `compile_entry` to refuse a bad pattern when it is saved.

Matching must not be made slow by a hostile pattern or prompt (catastrophic backtracking):
prompts are bounded (1000 characters by validate_request, MAX_CHECKED_LENGTH in admission),
patterns with nested quantifiers or backreferences are refused when saved and probed with
adversarial text, and every search runs under the `regex` module's timeout. A search that
times out refuses the prompt (fail closed) rather than letting it through unchecked.

Prompts and entries are normalised the same way before matching (`normalize`), so a term cannot
be slipped past by writing it differently: Unicode compatibility forms (NFKC: full-width and
mathematical letters, ligatures), invisible format characters (zero-width space and joiners, soft
hyphen, bidirectional controls), combining accents, and letters of other scripts that look like
Latin ones (Unicode's confusables, from the `confusable-homoglyphs` package's table: Cyrillic о,
Greek ο, …) all become the plain letters they pass for. The normalised text is only matched,
never stored or shown in place of what the person wrote.
"""

from __future__ import annotations

import functools
import unicodedata

import regex
from confusable_homoglyphs.confusables import confusables_data

TERM = "term"  # an entry's kind: a word or phrase (`BlocklistEntry.Kind` uses these values)
REGEX = "regex"  # a regular expression
MAX_PATTERN_LENGTH = 200
PROBE_TIMEOUT_SECONDS = 0.1
FLAGS = regex.IGNORECASE | regex.VERSION0
NESTED_QUANTIFIER = regex.compile(r"\((?:[^()\\]|\\.)*(?:[+*]|\{\d*,\d*\})(?:[^()\\]|\\.)*\)(?:[+*]|\{\d*,)")
BACKREFERENCE = regex.compile(r"\\[1-9]|\\g<|\\k<|\(\?P=|\(\?&|\(\?R\)|\(\?[0-9]")


class BlocklistPatternError(ValueError):
    """A blocklist pattern that cannot be used; the message says why."""


# Invisible characters that are not format characters (category Cf) but are ignorable all the same.
FILLERS = frozenset("\u115f\u1160\u3164\uffa0\u034f")
DROPPED_CATEGORIES = frozenset({"Cf", "Mn", "Me"})  # format characters; combining marks (after NFD)


@functools.cache
def look_alikes() -> dict[str, str]:
    """Each non-ASCII character that Unicode's confusables table says looks like an ASCII letter or
    digit, mapped to that letter (Cyrillic а → a). A capital maps as its small letter does, so
    Cyrillic І becomes I/i, not the l that Unicode's skeleton picks for it."""
    def ascii_twin(character: str) -> str | None:
        for homoglyph in confusables_data.get(character, ()):
            twin = homoglyph["c"]
            if len(twin) == 1 and twin.isascii() and twin.isalnum():
                return twin
        return None

    table = {}
    for character in confusables_data:
        if len(character) != 1 or character.isascii():
            continue
        small = character.lower()
        twin = (ascii_twin(small) if small != character else None) or ascii_twin(character)
        if twin is not None:
            table[character] = twin.upper() if character.isupper() and small != character else twin
    return table


def fold_characters(text: str) -> str:
    """Every character as the plain one it passes for: NFKC, then format characters and combining
    marks (after NFD) dropped, then look-alikes of other scripts mapped to ASCII letters."""
    decomposed = unicodedata.normalize("NFD", unicodedata.normalize("NFKC", text or ""))
    kept = "".join(c for c in decomposed if unicodedata.category(c) not in DROPPED_CATEGORIES and c not in FILLERS)
    table = look_alikes()
    return "".join(table.get(c, c) for c in unicodedata.normalize("NFC", kept))


def normalize(text: str) -> str:
    """Prompts and terms as matched: characters folded (`fold_characters`), whitespace collapsed."""
    return " ".join(fold_characters(text).split())


def entry_expression(pattern: str, kind: str, whole_word: bool) -> str:
    if kind == TERM:
        body = r"\s+".join(regex.escape(word) for word in normalize(pattern).split())
    else:
        # ASCII, which is all regular-expression syntax is written in, comes through unchanged.
        body = f"(?:{fold_characters(pattern)})"
    return rf"(?<!\w){body}(?!\w)" if whole_word else body


def probes(pattern: str):
    """Adversarial texts for catastrophic backtracking: long runs of the pattern's own characters."""
    characters = [c for c in dict.fromkeys(pattern.lower()) if c.isalnum()][:8] or ["a"]
    for character in characters + [" "]:
        yield character * 400 + "!"
    yield "".join(characters) * (400 // len(characters) + 1) + "!"
    yield "a " * 300 + "!"


@functools.lru_cache(maxsize=512)
def compile_entry(pattern: str, kind: str, whole_word: bool, probe: bool = False):
    """The compiled matcher of a blocklist entry; `BlocklistPatternError` says why a pattern is refused.

    With `probe`, also run it against adversarial text under a short timeout (done when saving).
    """
    pattern = (pattern or "").strip()
    if not pattern:
        raise BlocklistPatternError("Enter a term or a regular expression.")
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise BlocklistPatternError(f"Patterns are at most {MAX_PATTERN_LENGTH} characters.")
    if kind == REGEX:
        if BACKREFERENCE.search(pattern):
            raise BlocklistPatternError("Backreferences and recursion are not allowed: they can make matching "
                                        "very slow.")
        if NESTED_QUANTIFIER.search(pattern):
            raise BlocklistPatternError("Nested quantifiers such as (a+)+ are not allowed: they can make "
                                        "matching very slow. Rewrite the pattern without repeating a repeat.")
    elif kind != TERM:
        raise BlocklistPatternError(f"Unknown kind {kind!r}.")
    try:
        compiled = regex.compile(entry_expression(pattern, kind, whole_word), FLAGS)
    except (regex.error, OverflowError, RecursionError) as error:
        raise BlocklistPatternError(f"Not a valid regular expression: {error}.") from None
    if probe:
        try:
            if compiled.search("", timeout=PROBE_TIMEOUT_SECONDS) is not None:
                raise BlocklistPatternError("The pattern matches empty text, so it would refuse every prompt.")
            for text in probes(pattern):
                compiled.search(text, timeout=PROBE_TIMEOUT_SECONDS)
        except TimeoutError:
            raise BlocklistPatternError("The pattern takes too long to match some texts (catastrophic "
                                        "backtracking); simplify it.") from None
    return compiled
