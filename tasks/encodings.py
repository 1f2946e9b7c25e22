"""Which encoding a labeled file is in. Detection runs before any fallback, because a single-byte code page such
as cp1252 accepts almost any bytes: tried first, it would store Russian, Chinese or Greek text as mojibake.
A file decoded right can still hold text a system before it decoded wrong ("KÃ¶ln" for "Köln"): `repair_texts`
undoes that with ftfy."""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections import Counter
from pathlib import Path

import pandas as pd

from tasks.errors import DataError

UNDECODABLE = re.compile("[\udc80-\udcff]")  # a byte that was not UTF-8, kept by surrogateescape
ZIP_START = b"PK\x03\x04"  # the first bytes of a zip archive, which an .xlsx workbook is
# Latin-script code pages, the most common first: a tie between readings goes to the earlier one.
LATIN_CODE_PAGES = ("cp1252", "cp1250", "iso8859_2", "cp1254", "cp1257", "iso8859_16")
# The accented letters of each European language (lower case). A right reading of a Latin-script text has its
# accented letters in one of them (or in two Western ones: an export may mix French and German); a wrong one
# mixes alphabets ("mźme" for "même", "Árvíztûrõ" for Hungarian).
WESTERN = {
    "french": "àâæçéèêëîïôœùûüÿ", "spanish": "áéíñóúü", "portuguese": "áâãàçéêíóôõú", "german": "äöüß",
    "italian": "àèéìíîòóù", "catalan": "àçèéíïòóú", "dutch": "áéèëíïóöúü", "nordic": "åæøäöéáóíúý",
}
OTHERS = {
    "czech and slovak": "áäčďéěíĺľňóôŕřšťúůýž", "polish": "ąćęłńóśźż", "hungarian": "áéíóöőúüű",
    "romanian": "ăâîșşțţ", "baltic": "āčēģīķļņšūžąęėįųõäöü", "turkish": "çğıöşüâîİ", "croatian and slovene": "čćđšž",
}
ALPHABETS = [*OTHERS.values(), *(first + second for first, second in
                                 itertools.combinations_with_replacement(WESTERN.values(), 2))]
FITS = 0.8  # the share of accented letters one alphabet must hold for a reading to count as right
LETTERS = re.compile(r"[^\W\d_]+")
# A symbol between two letters ("¿" in "za¿ó"), other than the apostrophes and dashes of typeset text ("l’été")
COHERENCE_LEAD = 0.05  # how much more coherent a reading in another script must be than a different one
# A character other than a letter, digit or ASCII at the start of a word, right before its first letter
GLUED = re.compile(r"(?<![^\W\d_])([^\w\x00-\x7f])(?=[^\W\d_])")
SYMBOL_IN_WORD = re.compile(r"(?<=[^\W\d_])[^\w\s\x00-\x7f’‘‚‛‐‑–—·](?=[^\W\d_])")


def decode(raw: bytes, encoding: str, path: Path) -> tuple[str, str]:
    """The file's text and the encoding it was read in: `encoding` as given, else a BOM's, UTF-8, or the
    detected one. Lines of a UTF-8 file that are not UTF-8 keep their bytes as surrogates (see `undecodable`)."""
    if raw.startswith(ZIP_START):  # a workbook under a text file's name (a renamed .xlsx) reads as noise
        raise DataError(f"{path}: an Excel workbook or another zip archive, not text; if it is a workbook, name it "
                        ".xlsx and ingest it as it is")
    if encoding != "auto":
        utf8 = encoding.replace("_", "-").lower() in ("utf-8", "utf8")
        try:  # a BOM is no part of the first column's name
            return raw.decode("utf-8-sig" if utf8 else encoding), encoding
        except (UnicodeDecodeError, LookupError) as err:
            raise DataError(f"{path}: cannot be decoded as {encoding} ({err}); set ingest.encoding") from None
    for bom, name in ((b"\xff\xfe\x00\x00", "utf-32"), (b"\x00\x00\xfe\xff", "utf-32"),
                      (b"\xff\xfe", "utf-16"), (b"\xfe\xff", "utf-16")):
        if raw.startswith(bom):
            try:
                return raw.decode(name), name
            except UnicodeDecodeError as err:
                raise DataError(f"{path}: its {name.upper()} text breaks off at byte {err.start} ({err.reason}): the "
                                "file was cut short or is not all UTF-16; export it again") from None
    try:
        text = raw.decode("utf-8-sig")
        if not _utf16_shaped(raw):  # ASCII written as UTF-16 is valid UTF-8 too, with a NUL in every other byte
            return text, "utf-8"
    except UnicodeDecodeError:
        pass
    if b"\x00" in raw:
        return _utf16_without_bom(raw, path)
    if _mostly_utf8(raw):  # a few rows pasted from elsewhere: they are quarantined, the rest kept intact
        return raw.decode("utf-8-sig", errors="surrogateescape"), "utf-8"
    return _detect(raw, path)


def undecodable(fields: list[str | None]) -> tuple[list[str | None], str | None]:
    """Fields holding bytes that were not UTF-8, with those bytes shown as \\xNN, and the reason; else as given."""
    if not any(UNDECODABLE.search(field) for field in fields if field):
        return fields, None
    shown = [field if field is None else field.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
             for field in fields]
    return shown, "not valid UTF-8 unlike the rest of the file (bytes shown as \\xNN); re-save it as UTF-8"


def _utf16_shaped(raw: bytes) -> bool:
    """Most bytes at even (or odd) offsets are NUL and few at the others: UTF-16 text of mostly ASCII."""
    even, odd = raw[0::2].count(0), raw[1::2].count(0)
    half = len(raw) / 2
    return max(even, odd) > half / 2 and min(even, odd) < half / 10


def _utf16_without_bom(raw: bytes, path: Path) -> tuple[str, str]:
    """NUL bytes outside UTF-8: UTF-16 without its BOM, or no text at all."""
    from charset_normalizer import from_bytes

    best = from_bytes(raw).best()
    if best is None or not best.encoding.startswith("utf_16"):
        raise DataError(f"{path}: a binary file, not text; export the labels as CSV, TSV, JSON Lines, Parquet or "
                        ".xlsx")
    return str(best), best.encoding


def _mostly_utf8(raw: bytes) -> bool:
    """Some lines hold UTF-8 beyond ASCII and others are not UTF-8 at all: a UTF-8 file with stray rows."""
    valid = invalid = 0
    for line in raw.split(b"\n"):
        try:
            valid += not line.decode("utf-8").isascii()
        except UnicodeDecodeError:
            invalid += 1
    return valid > 0 and invalid > 0


def _detect(raw: bytes, path: Path) -> tuple[str, str]:
    """charset-normalizer's reading when it finds a language in another script (Cyrillic, Greek, CJK...); for
    Latin script, the code page whose accented letters make one alphabet (charset-normalizer cannot tell
    cp1252 from cp1257 there); else an error, since a guess would store mojibake as if it were text."""
    from charset_normalizer import from_bytes

    results = from_bytes(raw)
    best = results.best()
    if best is None:
        raise DataError(f"{path}: a binary file or not text in any known encoding; export the labels as CSV "
                        "(UTF-8), TSV, JSON Lines, Parquet or .xlsx")
    if best.coherence > 0 and not _latin_script(str(best)):
        return _script_reading(results, best, path)
    latin = _latin_reading(raw)
    if latin:
        return latin
    candidates = ", ".join(dict.fromkeys(match.encoding for match in results if match.chaos == best.chaos))
    raise DataError(f"{path}: its encoding cannot be told for sure from this text (it could be {candidates}); "
                    "save it as UTF-8 or set ingest.encoding")


def _script_reading(results, best, path: Path) -> tuple[str, str]:
    """The most coherent reading of a text in another script among those without the marks of a misreading
    (`_misread`): a wrong Cyrillic code page glues symbols to capitals (cp1251's "Когда" read as mac_cyrillic
    is "\xa0огда", "Двойное" is "ƒвойное"). charset-normalizer ranks such a reading first when it is less chaotic, which on a
    few short lines it can be. A runner-up within COHERENCE_LEAD ("Ќе могу" and "Не могу": some capitals are
    letters in both code pages) is an error, since a guess would store mojibake as if it were text."""
    clean = sorted((match for match in results if match.coherence > 0 and not _latin_script(str(match))
                    and not _misread(str(match))), key=lambda match: match.coherence, reverse=True)
    # Mac OS has written UTF-8 since 2001: an old Mac code page only where no Windows or ISO one reads cleanly
    clean = [match for match in clean if not match.encoding.startswith("mac_")] or clean
    rivals = [match for match in clean[1:] if str(match) != str(clean[0])]
    if clean and (not rivals or clean[0].coherence - rivals[0].coherence >= COHERENCE_LEAD):
        return str(clean[0]), clean[0].encoding
    candidates = ", ".join(dict.fromkeys(match.encoding for match in [best, *clean]))
    raise DataError(f"{path}: its encoding cannot be told for sure from this text (it could be {candidates}); "
                    "save it as UTF-8 or set ingest.encoding")


def _misread(text: str) -> bool:
    """Marks of a wrong code page in a text of another script: a symbol, dash or no-break space glued to the
    start of a word ("ƒвойное", "—колько"), or a capital after a small letter ("еЯнбй": Greek read as cp1251;
    "пОЩ": Greek read as koi8_r, which swaps the case of Cyrillic letters)."""
    for match in GLUED.finditer(text):
        category = unicodedata.category(match.group(1))
        if category[0] in "SZ" or category == "Pd":
            return True
    return any(word[i - 1].islower() and word[i].isupper()
               for word in LETTERS.findall(text) if not word.isascii() for i in range(1, len(word)))


def _latin_script(text: str) -> bool:
    letters = {char for char in text if not char.isascii() and char.isalpha()}
    return all(unicodedata.name(char, "").startswith("LATIN") for char in letters)


def _latin_reading(raw: bytes) -> tuple[str, str] | None:
    """The Latin code page whose reading best fits one alphabet, if it fits well enough."""
    readings = []
    for name in LATIN_CODE_PAGES:
        try:
            text = raw.decode(name)
        except UnicodeDecodeError:
            continue
        readings.append((_fit(text), text, name))
    fit, text, name = max(readings, key=lambda reading: reading[0], default=(0.0, "", ""))
    return (text, name) if fit >= FITS else None


def _lower(char: str) -> str:
    lower = char.lower()
    return lower if len(lower) == 1 else char  # "İ" lowers to two characters: keep it as it is


def _fit(text: str) -> float:
    """The largest share of the accented letters that one alphabet holds. 0 when a symbol sits between two
    letters ("za¿ó³æ" is Polish read as cp1252) or when most accented words are accented through and through
    ("Ļščāåņ" is Russian read as cp1257); 1 with no accented letter."""
    if SYMBOL_IN_WORD.search(text):
        return 0.0
    accented: Counter = Counter()
    words = whole = 0
    for word in LETTERS.findall(text):
        marks = [_lower(char) for char in word if not char.isascii()]
        if marks:
            accented.update(marks)
            words += 1
            whole += len(word) >= 2 and len(marks) == len(word)
    if not accented:
        return 1.0
    if whole * 2 > words:
        return 0.0
    held = max(sum(count for char, count in accented.items() if char in letters) for letters in ALPHABETS)
    return held / sum(accented.values())


def repair_texts(texts: pd.Series) -> tuple[pd.Series, pd.Index]:
    """The texts with mojibake undone (UTF-8 read as cp1252 or Latin-1 somewhere upstream, once or more:
    "KÃ¶ln", "donâ€™t") by ftfy's `fix_encoding`, which changes only text it recognises as such and nothing else
    (no quotes, widths or HTML); returns them and the index of those it changed. ASCII text cannot hold mojibake
    and is not looked at."""
    from ftfy import fix_encoding

    suspects = texts[texts.map(lambda text: isinstance(text, str) and not text.isascii())]
    fixed = suspects.map(fix_encoding)
    changed = fixed.index[(fixed != suspects).to_numpy()]
    return (texts.where(~texts.index.isin(changed), fixed) if len(changed) else texts), changed
