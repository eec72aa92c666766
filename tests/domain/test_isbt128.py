"""ISBT 128 identifiers: MOD 37-2 check characters, DIN, product code, date-times and the COI identifier."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfg.domain import isbt128
from mfg.domain.errors import ValidationFailed
from mfg.domain.isbt128 import (
    ALPHABET,
    DEMO_FIN,
    FIN_FIRST_CHARACTERS,
    CoiId,
    Din,
    ProductCode,
    check_character,
    din_from_text,
    division_code,
    division_codes,
    encode_datetime,
    flag_meaning,
    make_din,
    mod37_2,
    parse_coi,
    parse_datetime,
    parse_din_barcode,
    parse_din_keyboard,
    parse_product_code,
)

CI = settings(max_examples=200, deadline=None, database=None)
UTC = timezone.utc
BERLIN = ZoneInfo("Europe/Berlin")
DIGITS = "0123456789"

fins = st.builds(lambda first, rest: first + rest,
                 st.sampled_from(FIN_FIRST_CHARACTERS), st.text(DIGITS, min_size=4, max_size=4))
dins = st.builds(make_din, fins, st.integers(0, 99), st.integers(0, 999_999))
cois = st.builds(CoiId, fins, st.integers(0, 99), st.integers(0, 999_999))
NON_CHECK_FLAGS = ["00", "01", "02", "03", "04", "06", "07", "08", "15", "16", "17", "18", "19", "20", "42", "59"]


def problems(action: Callable[..., object], *args: object) -> list[str]:
    with pytest.raises(ValidationFailed) as caught:
        action(*args)
    return caught.value.problems


def message(action: Callable[..., object], *args: object) -> str:
    return "; ".join(problems(action, *args))


def weighted_sum(chars: str) -> int:
    """Independent restatement of ISO/IEC 7064: the character n places from the right weighs 2**n."""
    return sum(ALPHABET.index(c) * 2 ** n for n, c in enumerate(reversed(chars), start=1))


def verifies(chars_with_check: str) -> bool:
    """ISO/IEC 7064 verification: with the check character last (weight 2**0), the sum is 1 mod 37."""
    return sum(ALPHABET.index(c) * 2 ** n for n, c in enumerate(reversed(chars_with_check))) % 37 == 1


# --- MOD 37-2, checked by hand ------------------------------------------------------------------------


def test_din_check_character_worked_by_hand() -> None:
    # DIN A999926123456; values A=10, digits as themselves; weight 2**n, n counted from the right (1..13):
    #   A 10 x 8192 = 81920
    #   9  9 x (4096 + 2048 + 1024 + 512) = 9 x 7680 = 69120
    #   2  2 x 256 = 512      6  6 x 128 = 768     1  1 x 64 = 64
    #   2  2 x 32  = 64       3  3 x 16  = 48      4  4 x 8  = 32
    #   5  5 x 4   = 20       6  6 x 2   = 12
    #   sum = 81920 + 69120 + 512 + 768 + 64 + 64 + 48 + 32 + 20 + 12 = 152560
    #   152560 mod 37: 37 x 4123 = 152551, remainder 9
    #   check value = (38 - 9) mod 37 = 29 -> 'T' (A=10 ... T=29)
    assert weighted_sum("A999926123456") == 152560
    assert check_character("A999926123456") == "T"
    din = make_din("A9999", 26, 123456)
    assert (din.text, din.check, din.keyboard) == ("A999926123456", "T", "A999926123456T")
    assert din.flag_check() == "89"  # 60 + 29
    assert din.barcode() == "=A99992612345600"
    assert din.barcode("89") == "=A99992612345689"
    assert din.eye_readable() == "A9999 26 123456"


def test_mod37_2_small_cases_by_hand() -> None:
    assert mod37_2("0") == "1"  # sum 0 -> (38 - 0) mod 37 = 1
    assert mod37_2("1") == "*"  # 1 x 2 = 2 -> 38 - 2 = 36 -> '*'
    assert mod37_2("A1") == "X"  # 10 x 4 + 1 x 2 = 42; 42 mod 37 = 5; 38 - 5 = 33 -> 'X'
    assert mod37_2("*") == "3"  # 36 x 2 = 72; 72 mod 37 = 35; 38 - 35 = 3 -> '3'


@CI
@given(st.text(ALPHABET, min_size=1, max_size=20))
def test_check_character_makes_the_iso7064_sum_one(chars: str) -> None:
    check = mod37_2(chars)
    assert (weighted_sum(chars) + ALPHABET.index(check)) % 37 == 1
    assert verifies(chars + check)
    assert [c for c in ALPHABET if verifies(chars + c)] == [check]  # exactly one character verifies


@CI
@given(st.text(ALPHABET, min_size=1, max_size=20), st.data())
def test_mod37_2_detects_every_substitution_and_adjacent_transposition(chars: str, data: st.DataObject) -> None:
    check = mod37_2(chars)
    position = data.draw(st.integers(0, len(chars) - 1))
    for other in ALPHABET.replace(chars[position], ""):
        assert mod37_2(chars[:position] + other + chars[position + 1:]) != check
    for i in range(len(chars) - 1):
        if chars[i] != chars[i + 1]:
            swapped = chars[:i] + chars[i + 1] + chars[i] + chars[i + 2:]
            assert mod37_2(swapped) != check


def test_mod37_2_refuses_characters_outside_its_alphabet() -> None:
    assert message(mod37_2, "") == "MOD 37-2 needs at least one character to check."
    assert problems(mod37_2, "a1-") == [
        "character 1 is 'a': MOD 37-2 only uses 0-9, A-Z (upper case) and *",
        "character 3 is '-': MOD 37-2 only uses 0-9, A-Z (upper case) and *",
    ]


# --- DIN round trips and error detection ---------------------------------------------------------------


@CI
@given(dins, st.sampled_from(NON_CHECK_FLAGS + ["check"]))
def test_every_valid_din_round_trips(din: Din, flags: str) -> None:
    flags = din.flag_check() if flags == "check" else flags
    data = din.barcode(flags)
    assert len(data) == 16
    assert parse_din_barcode(data) == (din, flags)
    assert parse_din_barcode(data + "\r\n") == (din, flags)  # a scanner's suffix
    assert parse_din_keyboard(din.keyboard) == din
    assert parse_din_keyboard(f" {din.eye_readable()} {din.check} ".lower()) == din
    assert check_character(din.text) == din.check == mod37_2(din.text)
    assert din_from_text(din.eye_readable()) == din
    assert flag_meaning(din.flag_check()).startswith(f"check value {int(din.flag_check()) - 60} ")
    assert verifies(din.keyboard)


@CI
@given(dins)
def test_every_single_substitution_of_a_din_character_is_caught(din: Din) -> None:
    text, check = din.text, din.check
    for position, original in enumerate(text):
        allowed = FIN_FIRST_CHARACTERS if position == 0 else DIGITS
        for other in allowed.replace(original, ""):
            corrupt = text[:position] + other + text[position + 1:]
            assert "does not match" in message(parse_din_keyboard, corrupt + check)


@CI
@given(dins)
def test_every_adjacent_transposition_in_a_din_entry_is_caught(din: Din) -> None:
    entry = din.keyboard  # the 13 DIN characters and the check character
    for i in range(len(entry) - 1):
        if entry[i] == entry[i + 1]:
            continue
        swapped = entry[:i] + entry[i + 1] + entry[i] + entry[i + 2:]
        found = message(parse_din_keyboard, swapped)
        if i >= 1 and entry[i] in DIGITS and entry[i + 1] in DIGITS:  # syntax intact: only the check sees it
            assert "does not match" in found
        # otherwise the swap may break the syntax instead (a letter among digits, a FIN starting with 0)


@pytest.mark.parametrize(("data", "expected"), [
    ("", "DIN barcode data is empty."),
    ("A99992612345600", "DIN barcode data must start with '=', got 'A' (data 'A99992612345600')"),
    ("=<S1234V00", "This is a product code ('=<', data structure 003), not a DIN."),
    ("=%5100", "'=%' identifies another ISBT 128 data structure, not a DIN: after '=' a DIN starts with its FIN"),
    ("=A9999261234560",
     "DIN barcode data must be 16 characters ('=', 13 DIN characters, 2 flags), got 15: '=A9999261234560'"),
    ("=A999926123456000", "got 17"),
    ("=O99992612345600", "FIN character 1 is 'O': it must be a letter A-N or P-Z or a digit 1-9 "
                         "(the letter O is not used (it reads as zero))"),
    ("=099992612345600", "FIN character 1 is '0': it must be a letter A-N or P-Z or a digit 1-9 "
                         "(a FIN cannot start with the digit 0)"),
    ("=a99992612345600", "(lower-case letters are not used)"),
    ("=A99B92612345600", "FIN character 4 is 'B': FIN characters 2-5 must be digits 0-9"),
    ("=A9999Z612345600", "DIN year (the 2 characters after the FIN) must be 2 digits, got 'Z6'"),
    ("=A99992612 45600", "DIN sequence number (the last 6 characters) must be 6 digits, got '12 456'"),
    ("=A999926123456AB", "DIN flags must be 2 digits, got 'AB'"),
    ("=A99992612345605", "DIN flags '05' are not defined here: use 00, 01-04, 06, 07, 08, 15-19, 20-59 or 60-96"),
    ("=A99992612345697", "DIN flags '97' are not defined here"),
    ("=A99992612345660", "DIN flags '60' give check value 0 ('0'), but DIN A9999 26 123456 has check value 29 "
                         "('T'): expected flags '89'"),
])
def test_malformed_din_barcodes_say_what_is_wrong(data: str, expected: str) -> None:
    assert expected in message(parse_din_barcode, data)


def test_every_problem_of_a_din_is_reported_together() -> None:
    assert problems(parse_din_barcode, "=O9X99Z612345600") == [
        "FIN character 1 is 'O': it must be a letter A-N or P-Z or a digit 1-9 "
        "(the letter O is not used (it reads as zero))",
        "FIN character 3 is 'X': FIN characters 2-5 must be digits 0-9",
        "DIN year (the 2 characters after the FIN) must be 2 digits, got 'Z6'",
    ]


@pytest.mark.parametrize(("text", "expected"), [
    ("A999926123456", "The DIN check character is missing: type the 13 DIN characters and then the boxed "
                      "check character."),
    ("A99992612345T", "DIN entry must be 14 characters (13 DIN characters and the check character), got 13"),
    ("A999926123456TT", "DIN entry must be 14 characters (13 DIN characters and the check character), got 15: "
                        "'A999926123456TT'"),
    ("A9999261234", "got 11"),
    ("=A99992612345600", "This looks like barcode data ('='): type the DIN and its boxed check character."),
    ("A999926123456U", "DIN check character 'U' does not match DIN A9999 26 123456 as typed: the identifier or "
                       "its check character was misread. Re-read both from the label."),
    ("A999926123455T", "check character 'T' does not match DIN A9999 26 123455 as typed"),
    ("A999926123456-", "DIN check character '-' is not valid: check characters are 0-9, A-Z or *"),
    ("O999926123456T", "FIN character 1 is 'O'"),
    ("A99992612345XT", "DIN sequence number (the last 6 characters) must be 6 digits, got '12345X'"),
])
def test_malformed_keyboard_entries_say_what_is_wrong(text: str, expected: str) -> None:
    assert expected in message(parse_din_keyboard, text)


@pytest.mark.parametrize(("args", "expected"), [
    (("A999", 26, 1), "FIN must be 5 characters, got 4: 'A999'"),
    (("a9999", 26, 1), "(lower-case letters are not used)"),
    (("A-999", 26, 1), "FIN character 2 is '-': FIN characters 2-5 must be digits 0-9"),
    (("#9999", 26, 1), "(it is not a letter or a digit)"),
    ((9999, 26, 1), "FIN must be text, got int"),
    (("A9999", 2026, 1), "DIN year (last 2 digits of the year) must be 0-99 (2 digits), got 2026"),
    (("A9999", -1, 1), "got -1"),
    (("A9999", True, 1), "DIN year (last 2 digits of the year) must be a whole number, got bool"),
    (("A9999", 26, 1_000_000), "DIN sequence number must be 0-999999 (6 digits), got 1000000"),
    (("A9999", 26, "000001"), "DIN sequence number must be a whole number, got str"),
])
def test_make_din_validates_everything(args: tuple[object, object, object], expected: str) -> None:
    assert expected in message(make_din, *args)


def test_check_character_and_din_from_text_need_a_13_character_din() -> None:
    assert message(check_character, "A99992612345") == (
        "DIN must be 13 characters (FIN 5, year 2, sequence 6), got 12: 'A99992612345'")
    assert "FIN character 1 is 'O'" in message(check_character, "O999926123456")
    assert check_character("a9999 26 123456") == "T"


def test_flags() -> None:
    assert flag_meaning("00") == "flag not used"
    assert flag_meaning("03") == flag_meaning("17") == "container in a set"
    assert (flag_meaning("06"), flag_meaning("07"), flag_meaning("08")) == ("pilot tube", "test tube", "donor record")
    assert flag_meaning("20") == flag_meaning("59") == "local use"
    assert flag_meaning("96") == "check value 36 (check character '*')"
    din = make_din("A9999", 26, 123456)
    assert "expected flags '89'" in message(din.barcode, "88")
    assert "DIN flags must be 2 digits, got '0'" in message(din.barcode, "0")
    assert "not defined here" in message(din.barcode, "10")


def test_demo_fin_is_valid_and_marked_as_demo() -> None:
    din = make_din(DEMO_FIN, 26, 1)
    assert din.text == "X999926000001"
    assert "ICCBBA" in (isbt128.__doc__ or "")
    assert parse_din_keyboard(din.keyboard) == din


def test_din_is_frozen() -> None:
    din = make_din("A9999", 26, 123456)
    with pytest.raises(AttributeError):
        din.sequence = 2  # type: ignore[misc]


# --- product code ---------------------------------------------------------------------------------------


def test_product_code_round_trip() -> None:
    code = ProductCode("S1234", "V", "00")
    assert code.barcode() == "=<S1234V00"
    assert not code.divided
    assert parse_product_code("=<S1234V00") == code
    bag = ProductCode("SAB12", "E", division_code(3))
    assert bag.barcode() == "=<SAB12EC0"
    assert bag.divided
    assert parse_product_code(bag.barcode()) == bag
    assert parse_product_code("=<S0001VBa").division == "Ba"  # a second-level division
    for donation_type in ("V", "1", "2", "E", "r", "d"):
        assert parse_product_code(f"=<S1234{donation_type}00").donation_type == donation_type


def test_division_codes() -> None:
    assert [division_code(n) for n in (1, 2, 3, 26)] == ["A0", "B0", "C0", "Z0"]
    codes = [division_code(n) for n in range(1, 27)]
    assert len(set(codes)) == 26
    for code in codes:
        assert ProductCode("S1234", "V", code).division == code
    assert message(division_code, 27) == (
        "Bag number must be 1-26: divisions are A0-Z0, so a product divides into at most 26 bags; got 27")
    assert "got 0" in message(division_code, 0)
    assert "got bool" in message(division_code, True)


def test_a_product_in_one_bag_is_undivided_and_several_bags_are_divisions() -> None:
    assert division_codes(1) == ["00"]  # ISBT 128: 00 is the undivided product (not A0)
    assert ProductCode("S9999", "V", division_codes(1)[0]).barcode() == "=<S9999V00"
    assert not ProductCode("S9999", "V", division_codes(1)[0]).divided
    assert division_codes(2) == ["A0", "B0"] and len(division_codes(26)) == 26
    assert "at least one bag" in message(division_codes, 0)


@pytest.mark.parametrize(("data", "expected"), [
    ("=A99992612345600", "Product code data must start with '=<', got '=A'"),
    ("=<S1234V0", "Product code data must be 10 characters ('=<', 5 description, 1 donation type, 2 division), "
                  "got 9: '=<S1234V0'"),
    ("=<E1234V00", "Product description code must start with 'S' (cellular therapy), got 'E'"),
    ("=<S12a4V00", "Product description code character 4 is 'a': it must be A-Z or 0-9"),
    ("=<S1234Z00", "Type of donation 'Z' is not known: use one of 0, V, R"),
    ("=<S1234Va0", "Division character 1 is 'a': it must be an upper-case letter A-Z (or '00' undivided)"),
    ("=<S1234VA1", "Division character 2 is '1': it must be 0 or a lower-case letter a-z"),
    ("=<S1234V0A", "Division character 1 is '0'"),
])
def test_malformed_product_codes_say_what_is_wrong(data: str, expected: str) -> None:
    assert expected in message(parse_product_code, data)


def test_product_code_fields_are_validated_on_construction() -> None:
    assert "Division must be 2 characters" in message(ProductCode, "S1234", "V", "A")
    assert "Product description code must be 5 characters ('S' and 4 more), got 'S123'" in message(
        ProductCode, "S123", "V", "00")


# --- date-times ------------------------------------------------------------------------------------------


def test_expiry_across_the_spring_dst_change() -> None:
    # Europe/Berlin, 2026-03-29: clocks go from 02:00 CET to 03:00 CEST. Day of year 31 + 28 + 29 = 88.
    before = datetime(2026, 3, 29, 1, 30, tzinfo=BERLIN)  # CET, UTC+1 -> 00:30Z
    after = datetime(2026, 3, 29, 3, 30, tzinfo=BERLIN)  # CEST, UTC+2 -> 01:30Z
    assert encode_datetime("&>", before) == "&>0260880030"
    assert encode_datetime("&>", after) == "&>0260880130"
    for moment in (before, after):
        prefix, parsed = parse_datetime(encode_datetime("&>", moment))
        assert prefix == "&>" and parsed == moment and parsed.tzinfo is UTC


def test_expiry_across_the_autumn_dst_change() -> None:
    # Europe/Berlin, 2026-10-25: 02:30 happens twice. Day of year 273 + 25 = 298.
    first = datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=0)  # CEST -> 00:30Z
    second = datetime(2026, 10, 25, 2, 30, tzinfo=BERLIN, fold=1)  # CET -> 01:30Z
    assert encode_datetime("&>", first) == "&>0262980030"
    assert encode_datetime("&>", second) == "&>0262980130"
    assert parse_datetime("&>0262980130")[1] - parse_datetime("&>0262980030")[1] == timedelta(hours=1)


def test_year_end_and_day_366() -> None:
    assert encode_datetime("&>", datetime(2024, 12, 31, 23, 59, tzinfo=UTC)) == "&>0243662359"
    assert parse_datetime("&>0243662359") == ("&>", datetime(2024, 12, 31, 23, 59, tzinfo=UTC))
    assert parse_datetime("&>0240600000")[1] == datetime(2024, 2, 29, tzinfo=UTC)  # day 60 of a leap year
    assert parse_datetime("&>0260600000")[1] == datetime(2026, 3, 1, tzinfo=UTC)
    # Local New Year's night east of UTC is still the old year in UTC.
    assert encode_datetime("&*", datetime(2027, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=2)))) == "&*0263652230"
    assert encode_datetime("&*", datetime(2027, 1, 1, 0, 0, tzinfo=UTC)) == "&*0270010000"
    assert message(parse_datetime, "&>0263662359") == (
        "Expiration date-time: day of year 366 does not exist in 2026 (001-365)")


def test_seconds_are_dropped_never_rounded_up() -> None:
    moment = datetime(2026, 11, 26, 10, 15, 59, 999_999, tzinfo=UTC)
    assert parse_datetime(encode_datetime("&>", moment))[1] == datetime(2026, 11, 26, 10, 15, tzinfo=UTC)


@CI
@given(st.datetimes(min_value=datetime(2000, 1, 2), max_value=datetime(2999, 12, 30),
                    timezones=st.sampled_from([UTC, BERLIN, ZoneInfo("America/New_York"), ZoneInfo("Asia/Kolkata")]),
                    allow_imaginary=False),
       st.sampled_from(["&>", "&*"]))
def test_every_date_time_round_trips_to_the_minute(moment: datetime, prefix: str) -> None:
    data = encode_datetime(prefix, moment)
    assert len(data) == 12
    expected = moment.astimezone(UTC).replace(second=0, microsecond=0)
    assert parse_datetime(data) == (prefix, expected)


@pytest.mark.parametrize(("data", "expected"), [
    ("", "Date-time data is empty."),
    ("=>0260880030", "Date-time data must start with '&>' (expiration) or '&*' (collection), got '=>'"),
    ("&>026088003", "Expiration date-time must be 10 digits after '&>' (cyyjjjhhmm), got 9: '026088003'"),
    ("&*02608800A0", "Collection date-time must be 10 digits after '&*' (cyyjjjhhmm), got '02608800A0'"),
    ("&>0260000030", "Expiration date-time: day of year 000 does not exist in 2026 (001-365)"),
    ("&>0263672359", "day of year 367 does not exist in 2026"),
    ("&>0240882400", "Expiration date-time: hour 24 must be 00-23"),
    ("&>0240882360", "Expiration date-time: minute 60 must be 00-59"),
])
def test_malformed_date_times_say_what_is_wrong(data: str, expected: str) -> None:
    assert expected in message(parse_datetime, data)


def test_encode_datetime_refuses_what_it_cannot_encode() -> None:
    assert "got '=>'" in message(encode_datetime, "=>", datetime(2026, 1, 1, tzinfo=UTC))
    assert message(encode_datetime, "&>", datetime(2026, 1, 1)) == (
        "The date-time has no time zone: it cannot be converted to the site's time.")
    assert "got date" in message(encode_datetime, "&>", datetime(2026, 1, 1, tzinfo=UTC).date())
    assert "2000-2999, got 1999" in message(encode_datetime, "&>", datetime(1999, 12, 31, 23, 0, tzinfo=UTC))
    just_before_2000_utc = datetime(2000, 1, 1, 0, 30, tzinfo=timezone(timedelta(hours=1)))
    assert "got 1999" in message(encode_datetime, "&>", just_before_2000_utc)


def test_an_expiry_is_encoded_in_the_sites_local_time_and_read_back_in_it() -> None:
    """ISBT 128 date-times carry no zone and hospitals read them as local time: a Chicago site's label says
    11:30 for 16:30 UTC (CDT, UTC-5 in June), and reading it in the same zone gives the same moment."""
    from zoneinfo import ZoneInfo

    chicago = ZoneInfo("America/Chicago")
    moment = datetime(2026, 6, 3, 16, 30, tzinfo=UTC)
    assert encode_datetime("&>", moment, chicago) == "&>0261541130"
    assert encode_datetime("&>", moment) == "&>0261541630"  # UTC by default
    assert parse_datetime("&>0261541130", chicago) == ("&>", moment)
    assert encode_datetime("&>", datetime(2027, 1, 1, 3, 0, tzinfo=UTC), chicago) == "&>0263652100"  # 2026-12-31


# --- chain of identity -------------------------------------------------------------------------------------


def test_coi_identifier_worked_by_hand() -> None:
    # CHA999926123456: the last 13 characters keep their weights from the DIN example (sum 152560);
    # H = 17 x 2**14 = 278528 and C = 12 x 2**15 = 393216; sum = 824304.
    # 824304 mod 37: 37 x 22278 = 824286, remainder 18; (38 - 18) mod 37 = 20 -> 'K'.
    coi = CoiId("A9999", 26, 123456)
    assert coi.text == "CHA999926123456"
    assert weighted_sum(coi.text) == 824304
    assert coi.check == "K" != make_din("A9999", 26, 123456).check
    assert coi.barcode() == "&/CHA999926123456"
    assert coi.eye_readable() == "CH A9999 26 123456"
    assert coi.keyboard == "CHA999926123456K"


@CI
@given(cois)
def test_every_coi_round_trips_and_differs_from_the_din_check(coi: CoiId) -> None:
    assert parse_coi(coi.barcode()) == coi
    assert parse_coi(coi.keyboard) == coi
    assert parse_coi(f"{coi.eye_readable()} {coi.check}".lower()) == coi
    # 'CH' adds 12 x 2**15 + 17 x 2**14 = 671744 = 9 (mod 37): the COI check never equals the DIN's.
    assert coi.check != make_din(coi.fin, coi.year, coi.sequence).check


@CI
@given(cois)
def test_every_corruption_of_a_coi_entry_is_caught(coi: CoiId) -> None:
    entry = coi.keyboard
    for position in range(15):
        allowed = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789*"
        for other in allowed.replace(entry[position], ""):
            corrupt = entry[:position] + other + entry[position + 1:]
            found = message(parse_coi, corrupt)
            if position == 2 and other in FIN_FIRST_CHARACTERS or position > 2 and other in DIGITS:
                assert "does not match" in found
    for i in range(15):
        if entry[i] != entry[i + 1]:
            message(parse_coi, entry[:i] + entry[i + 1] + entry[i] + entry[i + 2:])


@pytest.mark.parametrize(("data", "expected"), [
    ("CHA999926123456", "The COI check character is missing: type the 15 identifier characters and then the boxed "
                        "check character."),
    ("CHA99992612345K", "COI entry must be 16 characters (CH, FIN 5, year 2, sequence 6, check character), got 15"),
    ("&/CHA99992612345", "COI barcode data must be '&/' and 15 characters (CH, FIN 5, year 2, sequence 6), "
                         "got 14 after '&/': 'CHA99992612345'"),
    ("&/CHA999926123456K", "got 16 after '&/'"),
    ("&/XXA999926123456", "COI identifier must start with 'CH', got 'XX'"),
    ("CXA999926123456K", "COI identifier must start with 'CH', got 'CX'"),
    ("&/CHO999926123456", "FIN character 1 is 'O'"),
    ("&/CHA99992612345Z", "COI sequence number (the last 6 characters) must be 6 digits, got '12345Z'"),
    ("CHA999926123456T", "COI check character 'T' does not match COI CH A9999 26 123456 as typed"),
    ("CHA999926123456?", "COI check character '?' is not valid"),
    ("", "COI entry must be 16 characters"),
])
def test_malformed_coi_identifiers_say_what_is_wrong(data: str, expected: str) -> None:
    assert expected in message(parse_coi, data)


def test_coi_fields_are_validated() -> None:
    assert "COI year (last 2 digits of the year) must be 0-99 (2 digits), got 100" in message(CoiId, "A9999", 100, 1)
    assert "FIN character 1 is '0'" in message(CoiId, "09999", 26, 1)
    assert message(parse_coi, 42) == "COI entry must be text, got int"


def test_a_wrong_check_character_message_does_not_reveal_the_right_one() -> None:
    # A999926123456 has check character T (worked out by hand above); showing it would let an
    # operator copy it from the screen instead of re-reading the label.
    text = message(parse_din_keyboard, "A999926123456U")
    assert "'T'" not in text and "misread" in text
