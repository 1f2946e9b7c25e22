"""Encodings: a file in another encoding is stored as the text its writer meant, never as mojibake; rows of a UTF-8
file that are not UTF-8 are quarantined with the reason while the others are stored intact; a binary file or a
text too short to tell its encoding is one clear error."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pandas as pd
import pytest

from tasks.config import IngestParams
from tasks.encodings import decode
from tasks.errors import DataError
from tasks.ingest import ingest_batch
from tests.conftest import make_project, project_params

LABELS = ["billing", "delivery"]
CFG = IngestParams(path=None, id_column="id")
_datasets = itertools.count()

# Two complaints per language, written here and encoded below: what a local labeling tool would export.
RUSSIAN = ["Мне дважды списали деньги за один заказ, верните их, пожалуйста",
           "Где моя посылка? Прошло уже две недели, а её всё нет"]
CHINESE = ["我的订单被重复扣款了两次，请尽快退款", "包裹已经两个星期了还没有到，请帮我查一下物流"]
GREEK = ["Χρεώθηκα δύο φορές για την ίδια παραγγελία, θέλω επιστροφή χρημάτων",
         "Πού είναι το δέμα μου; Πέρασαν ήδη δύο εβδομάδες χωρίς νέα"]
FRENCH = ["On m’a débité deux fois pour la même commande, à rembourser", "Où est mon colis ? Déjà deux semaines"]
POLISH = ["Pobrano mi opłatę dwa razy za to samo zamówienie", "Gdzie jest moja paczka? Minęły już dwa tygodnie"]
HUNGARIAN = ["Kétszer vonták le a díjat ugyanazért a rendelésért", "Hol van a csomagom? Már két hete várok rá"]
TURKISH = ["Siparişim için iki kez ücret alındı, lütfen iade edin", "Kargom nerede? İki haftadır bekliyorum"]
CZECH = ["Za jednu objednávku mi strhli peníze dvakrát", "Kde je můj balík? Čekám už dva týdny"]
FRENCH_AND_GERMAN = ["Ça coûte deux fois le prix affiché", "Die Rechnung ist größer als erwartet, bitte prüfen"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """One DVC project; each test ingests into a dataset of its own."""
    return make_project(tmp_path_factory.mktemp("encodings") / "project", pd.DataFrame({"a": [1]}),
                        project_params("unused"))


def export(texts: list[str]) -> str:
    return "id,text,label\n" + "".join(f'{n},"{text}",{LABELS[n % 2]}\n' for n, text in enumerate(texts, 1))


def ingest(project: Path, tmp_path: Path, name: str, content: bytes):
    source = tmp_path / name
    source.write_bytes(content)
    dataset = f"enc{next(_datasets)}"
    return ingest_batch(CFG, LABELS, project, source, dataset), dataset


def stored_texts(project: Path, report) -> list[str]:
    return pd.read_parquet(project / report.batch)["text"].tolist()


@pytest.mark.parametrize("texts, encoding", [
    (RUSSIAN, "cp1251"), (RUSSIAN, "koi8_r"), (CHINESE, "gb18030"), (GREEK, "cp1253"), (GREEK, "iso8859_7"),
    (FRENCH, "cp1252"), (POLISH, "cp1250"), (HUNGARIAN, "cp1250"), (TURKISH, "cp1254"), (CZECH, "cp1250"),
    (FRENCH_AND_GERMAN, "cp1252"),
], ids=["russian-cp1251", "russian-koi8-r", "chinese-gb18030", "greek-cp1253", "greek-iso8859-7", "french-cp1252",
        "polish-cp1250", "hungarian-cp1250", "turkish-cp1254", "czech-cp1250", "french-and-german-cp1252"])
def test_a_file_in_a_legacy_encoding_is_stored_as_the_text_it_holds(project, tmp_path, texts, encoding):
    report, _ = ingest(project, tmp_path, f"{encoding}.csv", export(texts).encode(encoding))
    assert stored_texts(project, report) == texts
    assert (report.accepted, report.quarantined) == (2, 0)
    assert f"(decoded as {report.encoding})" in report.text()
    assert "".join(texts).encode(report.encoding) == "".join(texts).encode(encoding)  # the name it reports fits


def test_a_utf8_file_with_one_cp1252_row_keeps_the_utf8_rows_and_quarantines_that_row(project, tmp_path):
    utf8_rows = [*RUSSIAN, *GREEK, "naïve café, £20"]
    content = export(utf8_rows).encode("utf-8") + '9,"pasted from Excel: café £5",billing\n'.encode("cp1252")
    report, _ = ingest(project, tmp_path, "mixed.csv", content)
    assert stored_texts(project, report) == utf8_rows
    assert report.encoding == "utf-8"
    reason = "not valid UTF-8 unlike the rest of the file (bytes shown as \\xNN); re-save it as UTF-8"
    assert (report.rows_read, report.accepted, report.quarantined, report.reasons) == (6, 5, 1, {reason: 1})
    with open(project / report.quarantine, newline="", encoding="utf-8") as handle:
        [row] = list(csv.DictReader(handle))
    assert (row["id"], row["_source_line"], row["_reason"]) == ("9", "7", reason)
    assert row["text"] == "pasted from Excel: caf\\xe9 \\xa35"  # the bytes as they are, nothing guessed


def test_a_jsonl_line_that_is_not_utf8_is_quarantined_with_its_bytes(project, tmp_path):
    content = ('{"id": "1", "text": "Где моя посылка?", "label": "delivery"}\n'.encode("utf-8")
               + '{"id": "2", "text": "café", "label": "billing"}\n'.encode("cp1252"))
    report, _ = ingest(project, tmp_path, "mixed.jsonl", content)
    assert stored_texts(project, report) == ["Где моя посылка?"]
    with open(project / report.quarantine, newline="", encoding="utf-8") as handle:
        [row] = list(csv.DictReader(handle))
    assert row["_raw_record"] == '{"id": "2", "text": "caf\\xe9", "label": "billing"}'
    assert row["_reason"].startswith("not valid UTF-8")


@pytest.mark.parametrize("name, content", [
    ("zip.csv", b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00" + bytes(range(256)) * 4),
    ("png.csv", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4),
    ("noise.csv", bytes((n * 151 + 7) % 256 for n in range(4000)).replace(b"\x00", b"\x01")),
], ids=["zip", "png", "noise-without-nul-bytes"])
def test_a_binary_file_is_one_clear_error(project, tmp_path, name, content):
    with pytest.raises(DataError) as caught:
        ingest(project, tmp_path, name, content)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / name}: ") and "\n" not in message
    assert ("binary file" in message and "export" in message
            or name == "zip.csv" and "Excel workbook or another zip archive" in message and "name it .xlsx" in message)
    assert "header but no rows" not in message


@pytest.mark.parametrize("text, encoding", [("Привет", "cp1251"), ("Где моя посылка", "koi8_r"),
                                            ("Πού είναι το δέμα μου", "cp1253")])
def test_a_text_too_short_to_tell_its_encoding_is_an_error_not_mojibake(project, tmp_path, text, encoding):
    with pytest.raises(DataError, match="encoding cannot be told for sure.*save it as UTF-8 or set ingest.encoding"):
        ingest(project, tmp_path, "short.csv", f"id,text,label\n1,{text},billing\n".encode(encoding))


def test_a_utf8_bom_is_no_part_of_the_first_column_when_utf8_is_named(project, tmp_path):
    cfg = CFG.model_copy(update={"encoding": "utf-8"})
    source = tmp_path / "bom.csv"
    source.write_bytes(b"\xef\xbb\xbf" + "id,text,label\n1,Où est mon colis ?,delivery\n".encode())
    report = ingest_batch(cfg, LABELS, project, source, f"enc{next(_datasets)}")
    assert stored_texts(project, report) == ["Où est mon colis ?"]


def test_a_named_encoding_is_used_as_given(project, tmp_path):
    cfg = CFG.model_copy(update={"encoding": "cp1251"})
    source = tmp_path / "named.csv"
    source.write_bytes("id,text,label\n1,Привет,billing\n".encode("cp1251"))
    report = ingest_batch(cfg, LABELS, project, source, f"enc{next(_datasets)}")
    assert stored_texts(project, report) == ["Привет"] and report.encoding == "cp1251"


@pytest.mark.parametrize("encoding", ["utf_16_le", "utf_16_be"])
def test_utf16_without_a_bom_is_read_as_utf16(project, tmp_path, encoding):
    texts = [RUSSIAN[0], FRENCH[0]]
    report, _ = ingest(project, tmp_path, f"{encoding}.csv", export(texts).encode(encoding))
    assert stored_texts(project, report) == texts and report.encoding == encoding


# Short exports whose capitals a wrong Cyrillic code page reads as symbols or other letters: cp1251's "К" is a
# no-break space in mac_cyrillic, "Д" is "ƒ", "Н" is "Ќ", "Т" is "“".
SHORT_RUSSIAN = [["Когда будет доставка?", "Двойное списание с карты", "Сколько стоит подписка?"],
                 ["Не могу войти в аккаунт", "Товар не соответствует описанию"],
                 ["Оплата не прошла", "Двойное списание с карты"],
                 ["Прошу отменить подписку", "Хочу сменить тариф"]]


SHORT_GREEK = [["Δεν μπορώ να συνδεθώ", "Χρεώθηκα δύο φορές"], ["Πού είναι το δέμα μου;", "Θέλω επιστροφή χρημάτων"],
               ["Η παραγγελία άργησε πολύ", "Ακυρώστε τη συνδρομή μου"]]


@pytest.mark.parametrize("texts, encoding", [
    *[(texts, encoding) for texts in SHORT_RUSSIAN for encoding in ("cp1251", "koi8_r")],
    *[(texts, encoding) for texts in SHORT_GREEK for encoding in ("cp1253", "iso8859_7")]])
def test_a_short_export_in_another_script_is_stored_as_written_or_refused_never_garbled(texts, encoding):
    content = "text,label\n" + "".join(f"{text},billing\n" for text in texts)
    try:
        decoded, _ = decode(content.encode(encoding), "auto", Path("short.csv"))
    except DataError as refused:
        assert "encoding cannot be told for sure" in str(refused) and "set ingest.encoding" in str(refused)
    else:
        assert decoded == content
