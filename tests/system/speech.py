"""Reference texts and how transcripts are compared with them: what holds for any correct
decoding (normalised words, word error rate)."""

from __future__ import annotations

import re

import jiwer

# Plain-language Asterisk prompts (no digits or spelled symbols) for the WER check.
EN_PROMPTS = [
    "agent-pass", "agent-loginok", "agent-loggedoff", "agent-incorrect", "auth-thankyou",
    "all-circuits-busy-now", "conf-onlyperson", "conf-enteringno", "vm-goodbye",
    "vm-incorrect", "vm-password", "vm-newpassword", "conf-getpin", "pbx-invalid",
]
FR_PROMPTS = ["agent-pass", "agent-loginok", "agent-user", "all-circuits-busy-now", "vm-goodbye"]


_NUMBERS = "zero one two three four five six seven eight nine ten eleven twelve".split()


def normalise(text: str) -> str:
    """Lower case, no punctuation, and small numbers spelled out ("5" and "five" are one word)."""
    text = text.lower().replace("-", " ")
    text = re.sub(r"[^\w\s']", " ", text)
    return " ".join(_NUMBERS[int(w)] if w.isdigit() and int(w) < len(_NUMBERS) else w for w in text.split())


def wer(reference: str, hypothesis: str) -> float:
    return jiwer.wer(normalise(reference), normalise(hypothesis))
