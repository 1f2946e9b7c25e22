"""PII redaction applied to text before anything is stored: emails, IBANs, card numbers, account numbers, phones."""

from __future__ import annotations

import re
from collections import Counter

# Order matters: the most specific patterns run first so that an IBAN is not half-eaten as a phone number.
PATTERNS: dict[str, re.Pattern] = {
    "email": re.compile(r"\b[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}\b"),
    "iban": re.compile(r"(?i)\b[A-Z]{2}\d{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,3})?\b"),
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


def iban_valid(text: str) -> bool:
    """The IBAN checksum (ISO 13616 mod 97)."""
    compact = re.sub(r"\s", "", text).upper()
    digits = "".join(str(int(char, 36)) for char in compact[4:] + compact[:4])
    return int(digits) % 97 == 1


def _iban_like(text: str) -> bool:
    """Upper case is how IBANs are written, so a bad checksum is still someone's mistyped IBAN; in lower or
    mixed case only a valid checksum counts, or "ab12 word word" would be one."""
    return text == text.upper() or iban_valid(text)


def _phone_like(text: str, bare: bool = True) -> bool:
    """9 to 15 digits shaped like a phone number: international (+), an area code in brackets, two or more
    separators, a national number starting with 0 split by a space, or (with `bare`) ten digits in one run
    that a North American number or a national number starting with 0 could be. Invoice numbers, years with
    a serial, Unix times and ZIP+4 codes (one hyphen) are left alone."""
    digits = re.sub(r"\D", "", text)
    text = text.strip()
    separators = re.findall(r"[ .-]", text)
    shaped = (text.startswith(("+", "(")) or len(separators) >= 2
              or (text.startswith("0") and separators == [" "]))
    unformatted = bare and text == digits and len(digits) == 10 and (
        digits[0] == "0" or (digits[0] in "23456789" and digits[3] in "23456789"))
    return 9 <= len(digits) <= 15 and (shaped or unformatted)


CHECKS = {  # a second look that a regex alone cannot take
    "iban": _iban_like,
    "card": lambda match: luhn_valid(re.sub(r"\D", "", match)),
    "phone": _phone_like,
}


def redact(text: str, identifier: bool = False) -> tuple[str, Counter]:
    """Replace each PII match with `[EMAIL]`, `[IBAN]`, `[CARD]`, `[ACCOUNT]` or `[PHONE]`; count them.
    An `identifier` (a row id) made of ten bare digits is a ticket number, not a phone number."""
    counts: Counter = Counter()
    for kind, pattern in PATTERNS.items():
        check = CHECKS.get(kind)
        if kind == "phone" and identifier:
            check = lambda match: _phone_like(match, bare=False)  # noqa: E731

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
