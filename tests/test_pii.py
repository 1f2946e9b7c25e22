"""redact(): each kind of PII is found and masked with the words around it kept; what is not PII is left alone."""

from __future__ import annotations

from collections import Counter

import pytest

from tasks.pii import luhn_valid, redact


@pytest.mark.parametrize("text, expected, kind", [
    ("write to jane.doe@example.com today", "write to [EMAIL] today", "email"),
    ("cc JOHN.SMITH+bills@Mail.Example.CO.UK, thanks", "cc [EMAIL], thanks", "email"),
    ("call me on +44 20 7946 0958 after five", "call me on [PHONE] after five", "phone"),
    ("call (555) 123-4567 now", "call [PHONE] now", "phone"),
    ("my number is 555.123.4567.", "my number is [PHONE].", "phone"),
    ("ring 07700 900123 please", "ring [PHONE] please", "phone"),
    ("ring +447700900123 please", "ring [PHONE] please", "phone"),
    ("card 4111 1111 1111 1111 was charged", "card [CARD] was charged", "card"),
    ("card 5500-0000-0000-0004 was charged", "card [CARD] was charged", "card"),
    ("card 4111111111111111 was charged", "card [CARD] was charged", "card"),
    ("amex 3782 822463 10005 declined", "amex [CARD] declined", "card"),
    ("refund to GB82 WEST 1234 5698 7654 32 please", "refund to [IBAN] please", "iban"),
    ("refund to GB82WEST12345698765432 please", "refund to [IBAN] please", "iban"),
    ("iban: DE89 3704 0044 0532 0130 00.", "iban: [IBAN].", "iban"),
    ("iban FR14 2004 1010 0505 0001 3M02 606 ok", "iban [IBAN] ok", "iban"),
    ("my account number 12345678 is locked", "my account number [ACCOUNT] is locked", "account"),
    ("Account No. 987654321 closed", "Account No. [ACCOUNT] closed", "account"),
    ("acct #: 12-34-56-78 frozen", "acct #: [ACCOUNT] frozen", "account"),
    ("account #12345678 frozen", "account #[ACCOUNT] frozen", "account"),
    ("sort code 12-34-56 and", "sort code [ACCOUNT] and", "account"),
    ("a/c 00123456 overdrawn", "a/c [ACCOUNT] overdrawn", "account"),
])
def test_each_kind_is_masked_and_the_words_around_it_kept(text, expected, kind):
    assert redact(text) == (expected, Counter({kind: 1}))


def test_several_kinds_in_one_text_are_each_masked_and_counted():
    text = ("acct 12345678, card 4111111111111111, mail x@y.org, call +1 212 555 0100, "
            "iban GB82WEST12345698765432, and mail x@y.org again")
    clean, counts = redact(text)
    assert clean == ("acct [ACCOUNT], card [CARD], mail [EMAIL], call [PHONE], iban [IBAN], "
                     "and mail [EMAIL] again")
    assert counts == Counter({"email": 2, "account": 1, "card": 1, "phone": 1, "iban": 1})


def test_redacting_twice_changes_nothing_more():
    once, _ = redact("mail a@b.io, card 4111 1111 1111 1111, call 020 7946 0958")
    assert redact(once) == (once, Counter())


@pytest.mark.parametrize("text", [
    "order 12345678 arrived late",
    "order #123456789 arrived late",
    "tracking 1Z999AA10123456784",
    "on 2023-01-15 at 10:30",
    "on 15/01/2023 and 15.01.2023",
    "2023-01-15T10:30:00Z",
    "2023-01-15 10:30:00",
    "between 2023-01-01 and 2023-02-01",
    "paid $1,299.99 twice",
    "paid 1 299,00 EUR, then 12.50 GBP",
    "my account is locked",
    "the account was closed in 2023",
    "account balance 1,234.56",
    "card 4111 1111 1111 1112 declined",  # 16 digits, Luhn fails
    "ref 4111111111111112",
    "version 1.2.3, ISBN 978-3-16-148410-0",
    "at 10:30-11:45",
    "no@ sign here and an @handle",
    "",
    "   ",
])
def test_what_is_not_pii_is_left_alone(text):
    assert redact(text) == (text, Counter())


def test_luhn_checksum():
    assert luhn_valid("4111111111111111") and luhn_valid("5500000000000004") and luhn_valid("378282246310005")
    assert not luhn_valid("4111111111111112") and not luhn_valid("1234567812345678")


def test_an_iban_with_a_bad_checksum_is_masked_whole_not_half():
    text = "iban GB83 WEST 1234 5698 7654 32 bounced"
    assert redact(text) == ("iban [IBAN] bounced", Counter({"iban": 1}))


@pytest.mark.parametrize("text", ["invoice INV-2023-000123 unpaid", "order ref 2023-123456", "zip 90210-1234"])
def test_dashed_references_are_not_phone_numbers(text):
    assert redact(text) == (text, Counter())


@pytest.mark.parametrize("text, expected, kind", [
    ("refund to gb82 west 1234 5698 7654 32 please", "refund to [IBAN] please", "iban"),
    ("refund to gb82west12345698765432 please", "refund to [IBAN] please", "iban"),
    ("iban De89370400440532013000 ok", "iban [IBAN] ok", "iban"),
    ("call me on 2125550100 tonight", "call me on [PHONE] tonight", "phone"),
    ("ring 0612345678 please", "ring [PHONE] please", "phone"),
])
def test_lowercase_ibans_and_unformatted_ten_digit_phones_are_masked(text, expected, kind):
    assert redact(text) == (expected, Counter({kind: 1}))


@pytest.mark.parametrize("text", [
    "ab12 word word here",  # lower case looks like an IBAN only with a valid checksum
    "order 1234567890 shipped",  # a North American number never starts with 1
    "sent at 1700000000",  # a Unix time
    "ref 2120550100",  # the exchange starts with 0: not a phone number
])
def test_lowercase_lookalikes_and_ten_digit_references_are_left_alone(text):
    assert redact(text) == (text, Counter())


def test_a_ten_digit_identifier_is_not_taken_for_a_phone_number():
    assert redact("2125550100", identifier=True) == ("2125550100", Counter())
    assert redact("+1 212 555 0100", identifier=True) == ("[PHONE]", Counter({"phone": 1}))
