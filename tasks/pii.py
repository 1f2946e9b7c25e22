"""PII redaction applied to text before anything is stored: emails, IBANs, card numbers, account numbers, phones."""

from __future__ import annotations

import re
from collections import Counter

# Order matters: the most specific patterns run first so that an IBAN is not half-eaten as a phone number.
PATTERNS: dict[str, re.Pattern] = {
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "iban": re.compile(r"\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b"),
    "card": re.compile(r"(?<!\d)(?:\d[ -]?){12,18}\d(?!\d)"),
    # the number after a word that says it is one; the word itself stays
    "account": re.compile(r"(?i)\b(?:account|acct|a/c|sort code)(?:\s*(?:no\.?|number|#))?\s*[:#]?\s*"
                          r"(?P<pii>\d[\d -]{4,}\d)\b"),
    "phone": re.compile(r"(?<![\w/])(?:\+\d{1,3}[ .-]?)?(?:\(?\d{2,5}\)?[ .-]?){2,4}\d{3,4}(?![\w/])"),
}


def luhn_valid(digits: str) -> bool:
    """The card-number checksum: keeps order numbers and dates from being taken for cards."""
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char) * (2 if i % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0


def _phone_like(text: str) -> bool:
    """9 to 15 digits shaped like a phone number: international (+), an area code in brackets, two or more
    separators, or a national number starting with 0 split by a space. Invoice numbers, years with a serial
    and ZIP+4 codes (one hyphen) are left alone."""
    digits = re.sub(r"\D", "", text)
    text = text.strip()
    separators = re.findall(r"[ .-]", text)
    shaped = (text.startswith(("+", "(")) or len(separators) >= 2
              or (text.startswith("0") and separators == [" "]))
    return 9 <= len(digits) <= 15 and shaped


CHECKS = {  # a second look that a regex alone cannot take (an IBAN with a typo is still someone's IBAN)
    "card": lambda match: luhn_valid(re.sub(r"\D", "", match)),
    "phone": _phone_like,
}


def redact(text: str) -> tuple[str, Counter]:
    """Replace each PII match with `[EMAIL]`, `[IBAN]`, `[CARD]`, `[ACCOUNT]` or `[PHONE]`; count them."""
    counts: Counter = Counter()
    for kind, pattern in PATTERNS.items():
        check = CHECKS.get(kind)

        def replace(match: re.Match, kind=kind, check=check) -> str:
            if check and not check(match.group(0)):
                return match.group(0)
            counts[kind] += 1
            if "pii" in match.re.groupindex:  # keep the words around the number
                start, end = match.span("pii")
                whole = match.group(0)
                offset = match.start()
                return whole[: start - offset] + f"[{kind.upper()}]" + whole[end - offset :]
            return f"[{kind.upper()}]"

        text = pattern.sub(replace, text)
    return text, counts
