"""What every LLM method's prompts share: the item/user catalogue, the system line, the chat template, and fitting a
prompt into MAX_PROMPT_TOKENS by cutting its oldest listed items (never the candidates).

The methods' own prompts build on these: `methods/mkv/prompts.py` (key-value records), `methods/trsr/prompts.py`
(summary + recent items), `llm/unified.py` (titles and soft ID tokens, RSLLM and BDLM).
"""
from __future__ import annotations

import pandas as pd

SYSTEM = "You are a movie recommender. Reply with the title of one candidate movie and nothing else."
FORMS = ("listed", "free")  # PROMPT_FORM: candidates listed before the question (the papers'), or none named
FREE_SYSTEM = "You are a movie recommender. Reply with the title of one movie and nothing else."
FREE_QUESTION = "Which movie will the user watch next?"


class PromptError(ValueError):
    """A prompt that cannot be built, with a message that says what to do."""


class Catalog:
    """Item and user attributes by id, as plain dicts, for fast prompt rendering."""

    def __init__(self, users: pd.DataFrame, items: pd.DataFrame):
        self.items = {int(r["item_id"]): r for r in items.to_dict("records")}
        self.users = {int(r["user_id"]): r for r in users.to_dict("records")}
        empty = [i for i, r in self.items.items() if not str(r["title"]).strip()]
        if empty:
            raise PromptError(f"{len(empty)} item(s) have an empty title (first id {empty[0]}): fix the item file")

    def title(self, item_id: int) -> str:
        """The item's title (what the model must produce)."""
        return str(self.items[int(item_id)]["title"])


def is_listed(form: str) -> bool:
    """Whether PROMPT_FORM lists the candidates in the prompt (listed) or names none (free)."""
    if form not in FORMS:
        raise ValueError(f"PROMPT_FORM must be one of {', '.join(FORMS)}, got {form!r}")
    return form == "listed"


def candidate_block(candidates, show, question: str, listed: bool = True) -> list[str]:
    """The end of a prompt: 'Candidates:', one line per candidate (`show(id)`) and the question; or, in the free
    form, the free question alone (no candidate named: each is scored as the answer)."""
    if not listed:
        return [FREE_QUESTION]
    if len(candidates) == 0:
        raise PromptError("no candidates to rank: every example needs its candidate list")
    return ["Candidates:"] + [f"- {show(c)}" for c in candidates] + [question]


def prompt_text(tokenizer, messages: list[dict]) -> str:
    """The prompt string through the tokenizer's chat template, ending where the answer starts."""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def n_tokens(tokenizer, text: str) -> int:
    """Token count of a text (no special tokens added)."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def _texts(built) -> list[str]:
    """The prompt texts of a built listwise prompt (a string) or pointwise prompt (prefix, questions)."""
    return [built] if isinstance(built, str) else [built[0] + q for q in built[1]]


def fit_items(build, items, tokenizer, max_tokens: int, what: str, texts=_texts):
    """build(items[cut:]) with the fewest oldest items cut so that the longest of texts(built) fits max_tokens.

    Binary search on the cut (token counts grow with the items kept); returns (built, cut).
    """
    items = list(items)

    def longest(built) -> int:
        return max(n_tokens(tokenizer, t) for t in texts(built))

    built = build(items)
    if longest(built) <= max_tokens:
        return built, 0
    low, high = 1, len(items)  # the answer lies in [low, high]; high = every item cut
    if longest(build([])) > max_tokens:
        raise PromptError(f"the prompt for {what} needs more than MAX_PROMPT_TOKENS={max_tokens} tokens even with no "
                          f"listed items: raise MAX_PROMPT_TOKENS or shorten what every prompt shows (summary, "
                          f"candidates)")
    while low < high:
        mid = (low + high) // 2
        if longest(build(items[mid:])) <= max_tokens:
            high = mid
        else:
            low = mid + 1
    return build(items[low:]), low


def note_cuts(rows: pd.DataFrame, max_tokens: int, what: str = "history") -> pd.DataFrame:
    """Print how many prompts lost how many oldest items (column `history_cut`) to fit; returns the rows."""
    if len(rows) and rows["history_cut"].any():
        print(f"note: {int((rows['history_cut'] > 0).sum())} prompt(s) lost {int(rows['history_cut'].sum())} oldest "
              f"{what} item(s) to fit MAX_PROMPT_TOKENS={max_tokens}")
    return rows
