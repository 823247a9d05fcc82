"""The ``faq`` knowledge-base loader: both JSON shapes, CSV, and every error it names."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pipeline.errors import ConfigError
from pipeline.tasks.faq.kb import KbEntry, load_eval, load_kb, slugify

DATA = Path(__file__).resolve().parents[2] / "pipeline" / "data"
SHOP_KB = DATA / "faq_shop.json"
SHOP_CSV = DATA / "faq_shop.csv"
SHOP_EVAL = DATA / "faq_eval.json"

# The split stage cuts messages at these; an eval item must be one sub-question.
SENTENCE_BREAK = re.compile(r"[?!.？！。\n]")


def write(tmp_path: Path, name: str, content: object) -> Path:
    path = tmp_path / name
    path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
    return path


# -- JSON ----------------------------------------------------------------------------


def test_json_object_with_entries(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kb.json",
        {
            "name": "t",
            "language": "en",
            "entries": [
                {"id": "reset-password", "questions": ["How do I reset my password?", " I forgot it "], "answer": "A."},
                {"id": "hours", "question": "When are you open?", "answer": " 9 to 5. "},
            ],
        },
    )
    assert load_kb(path) == [
        KbEntry("reset-password", ("How do I reset my password?", "I forgot it"), "A."),
        KbEntry("hours", ("When are you open?",), "9 to 5."),
    ]


def test_json_plain_list_derives_missing_ids_and_merges_repeats(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kb.json",
        [
            {"question": "Do you ship to Canada?", "answer": "Yes."},
            {"id": "returns", "questions": ["How do I return?", "How do I return?"], "answer": "Within 30 days."},
            {"id": "returns", "question": "Can I send it back?", "answer": "Within 30 days."},
        ],
    )
    assert load_kb(path) == [
        KbEntry("do-you-ship-to-canada", ("Do you ship to Canada?",), "Yes."),
        KbEntry("returns", ("How do I return?", "Can I send it back?"), "Within 30 days."),
    ]


def test_json_keywords_are_kept_in_order_and_merged_for_a_repeated_id(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kb.json",
        [
            {"id": "gift", "questions": ["Gift cards?"], "keywords": [" voucher ", "gift certificate"], "answer": "Y."},
            {"id": "gift", "question": "E-gift?", "keywords": ["voucher", "present"], "answer": "Y."},
            {"id": "hours", "question": "Open?", "answer": "9 to 5."},
        ],
    )
    assert load_kb(path) == [
        KbEntry("gift", ("Gift cards?", "E-gift?"), "Y.", ("voucher", "gift certificate", "present")),
        KbEntry("hours", ("Open?",), "9 to 5."),
    ]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"id": "a", "questions": ["Q?"]}, r"missing answer \(kb\.json entries\[1\]\)"),
        ({"id": "a", "questions": ["Q?"], "answer": "  "}, r"empty answer \(kb\.json entries\[1\]\)"),
        (
            {"id": "a", "questions": ["Q?", " "], "answer": "A"},
            r"empty question \(kb\.json entries\[1\] questions\[1\]\)",
        ),
        ({"id": "a", "question": "", "answer": "A"}, r"empty question \(kb\.json entries\[1\]\)"),
        ({"id": "a", "questions": [], "answer": "A"}, r'"questions" must be a non-empty list .*entries\[1\]'),
        ({"id": "a", "answer": "A"}, r'entry has no "questions".*entries\[1\]'),
        ({"id": "a", "question": "Q", "questions": ["Q"], "answer": "A"}, r"both .*entries\[1\]"),
        ({"id": 7, "question": "Q", "answer": "A"}, r"id must be a string, got int .*entries\[1\]"),
        (
            {"id": "ok", "questions": ["Q?"], "answer": "Another answer"},
            r"duplicate id 'ok' .*entries\[0\].*entries\[1\]",
        ),
        ({"question": "???", "answer": "A"}, r"no id given and none can be derived .*entries\[1\]"),
        ("not an object", r"entry must be an object, got str \(kb\.json entries\[1\]\)"),
        ({"id": "a", "question": "Q", "keywords": "k", "answer": "A"}, r'"keywords" must be a list .*entries\[1\]'),
        ({"id": "a", "question": "Q", "keywords": [" "], "answer": "A"}, r"empty keyword .*entries\[1\] keywords\[0\]"),
    ],
)
def test_json_entry_errors_name_file_and_entry(tmp_path: Path, entry: object, message: str) -> None:
    path = write(tmp_path, "kb.json", [{"id": "ok", "question": "Fine?", "answer": "Yes."}, entry])
    with pytest.raises(ConfigError, match=message):
        load_kb(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([], r"knowledge base has no entries \(kb\.json\)"),
        ({"name": "x", "entries": []}, r"knowledge base has no entries \(kb\.json\)"),
        ({"name": "x"}, r'"entries" list \(kb\.json\)'),
        ("{not json", r"invalid JSON.*\(kb\.json\)"),
    ],
)
def test_json_file_errors(tmp_path: Path, content: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_kb(write(tmp_path, "kb.json", content))


# -- CSV -----------------------------------------------------------------------------


def test_csv_groups_rows_by_id_and_derives_missing_ids(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kb.csv",
        "\ufeffId,Question,Answer\n"  # a spreadsheet's BOM and capitalised header
        'reset,How do I reset my password?,"Use ""Forgot password?"", then check your email."\n'
        "reset,I forgot my password,\n"
        "\n"
        ",Do you ship to Canada?,Yes.\n"
        'reset,"Can\'t log in, help?","Use ""Forgot password?"", then check your email."\n',
    )
    assert load_kb(path) == [
        KbEntry(
            "reset",
            ("How do I reset my password?", "I forgot my password", "Can't log in, help?"),
            'Use "Forgot password?", then check your email.',
        ),
        KbEntry("do-you-ship-to-canada", ("Do you ship to Canada?",), "Yes."),
    ]


def test_csv_keywords_column_is_semicolon_separated_and_optional_on_later_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "kb.csv",
        "id,question,keywords,answer\n"
        "gift,Gift cards?,voucher; gift certificate ,Yes.\n"
        "gift,E-gift?,,\n"
        "gift,Present?,present;voucher,\n",
    )
    assert load_kb(path) == [
        KbEntry("gift", ("Gift cards?", "E-gift?", "Present?"), "Yes.", ("voucher", "gift certificate", "present"))
    ]


def test_regions_and_synonyms_from_json_and_csv(tmp_path: Path) -> None:
    from pipeline.tasks.faq.kb import kb_synonyms, places

    path = write(tmp_path, "kb.json", {
        "synonyms": [["order", "Parcel", "box"], ["balance", "left"]],
        "entries": [{"id": "ship", "question": "Abroad?", "answer": "Yes.",
                     "regions": {"EU": ["Germany", "France"], "Canada": []}}],
    })  # fmt: skip
    entry = load_kb(path)[0]
    assert entry.regions == (("EU", ("Germany", "France")), ("Canada", ()))
    assert places(entry) == ("EU", "Germany", "France", "Canada")
    assert kb_synonyms(path) == (("order", "parcel", "box"), ("balance", "left"))
    csv_path = tmp_path / "kb.csv"
    csv_path.write_text('id,question,answer,regions\nship,Abroad?,Yes.,"EU: Germany, France; Canada"\n')
    assert load_kb(csv_path) == [entry] and kb_synonyms(csv_path) == ()
    twice = write(tmp_path, "twice.json", {"synonyms": [["a", "b"], ["b", "c"]], "entries": []})
    with pytest.raises(ConfigError, match="in two groups: b"):
        kb_synonyms(twice)
    with pytest.raises(ConfigError, match="at least two"):
        kb_synonyms(write(tmp_path, "one.json", {"synonyms": [["a"]], "entries": []}))
    bad = write(tmp_path, "bad.json", [{"id": "a", "question": "Q", "answer": "A", "regions": ["EU"]}])
    with pytest.raises(ConfigError, match=r'"regions" must map .*entries\[0\]'):
        load_kb(bad)


def test_csv_without_id_column(tmp_path: Path) -> None:
    path = write(tmp_path, "kb.csv", "question,answer\nWhere is my order?,Check your email.\n")
    assert load_kb(path) == [KbEntry("where-is-my-order", ("Where is my order?",), "Check your email.")]


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ("a,Q?,\n", r"missing answer \(kb\.csv row 3\)"),
        ("a,,A\n", r"empty question \(kb\.csv row 3\)"),
        ("ok,Q?,Other\n", r"duplicate id 'ok' already used with a different answer at row 2 \(kb\.csv row 3\)"),
        (
            ",Fine?,Yes\n,fine!,Other\n",
            r"derived id 'fine' already used with a different answer at row 3 \(kb\.csv row 4\)",
        ),
        ("a,Q?,A,extra\n", r"more cells than the header \(kb\.csv row 3\)"),
    ],
)
def test_csv_row_errors_name_file_and_row(tmp_path: Path, rows: str, message: str) -> None:
    path = write(tmp_path, "kb.csv", "id,question,answer\nok,Fine?,Yes.\n" + rows)
    with pytest.raises(ConfigError, match=message):
        load_kb(path)


def test_csv_bad_header_and_empty_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing answer \(kb\.csv row 1\)"):
        load_kb(write(tmp_path, "kb.csv", "id,question,reply\na,Q,A\n"))
    with pytest.raises(ConfigError, match=r"knowledge base has no entries \(kb\.csv\)"):
        load_kb(write(tmp_path, "kb.csv", "id,question,answer\n"))


# -- files ---------------------------------------------------------------------------


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown knowledge base extension '\.yaml'.*\(kb\.yaml\)"):
        load_kb(write(tmp_path, "kb.yaml", "entries: []"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read file.*nope\.json"):
        load_kb(tmp_path / "nope.json")


def test_slugify() -> None:
    assert slugify("  Where's my Café order?! ") == "where-s-my-cafe-order"
    assert slugify("???") == ""
    long = slugify("word " * 40)
    assert len(long) <= 64 and not long.endswith("-") and long.startswith("word-word")


# -- evaluation sets -----------------------------------------------------------------


def test_load_eval_both_shapes_and_errors(tmp_path: Path) -> None:
    items = [{"question": " Where is it? ", "expect": "track"}]
    assert load_eval(write(tmp_path, "a.json", {"kb": "kb.json", "items": items})) == [("Where is it?", "track")]
    assert load_eval(write(tmp_path, "b.json", items)) == [("Where is it?", "track")]
    with pytest.raises(ConfigError, match=r"missing expect \(c\.json items\[0\]\)"):
        load_eval(write(tmp_path, "c.json", [{"question": "Q?"}]))
    with pytest.raises(ConfigError, match=r"evaluation set has no items \(d\.json\)"):
        load_eval(write(tmp_path, "d.json", {"items": []}))


# -- the shipped knowledge base ------------------------------------------------------


def test_shipped_kb_is_well_formed() -> None:
    entries = load_kb(SHOP_KB)
    assert 30 <= len(entries) <= 40
    for entry in entries:
        assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", entry.id), entry.id
        assert len(entry.questions) >= 2, entry.id
    questions = [q.casefold() for e in entries for q in e.questions]
    assert len(questions) == len(set(questions)), "a question leads to two entries"


def test_shipped_csv_is_the_same_kb_as_the_json() -> None:
    assert load_kb(SHOP_CSV) == load_kb(SHOP_KB), "regenerate it: python ops/faq_to_csv.py pipeline/data/faq_shop.json"


def test_shipped_eval_covers_every_entry_with_single_sub_questions() -> None:
    ids = {entry.id for entry in load_kb(SHOP_KB)}
    items = load_eval(SHOP_EVAL)
    assert json.loads(SHOP_EVAL.read_text(encoding="utf-8"))["kb"] == SHOP_KB.name
    assert len(items) >= 70
    assert {expect for _, expect in items} - ids == set(), "eval expects ids the KB does not have"
    assert ids - {expect for _, expect in items} == set(), "KB entries the eval never asks for"
    kb_questions = {q.casefold() for entry in load_kb(SHOP_KB) for q in entry.questions}
    for question, _ in items:
        assert [p for p in SENTENCE_BREAK.split(question) if p.strip()] == [question.rstrip("?!.？！。")], question
        assert question.casefold() not in kb_questions, f"eval item copies a KB phrasing: {question}"
