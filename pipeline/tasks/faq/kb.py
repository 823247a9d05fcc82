"""Knowledge bases for the ``faq`` task, read from JSON or CSV.

A knowledge base (KB) is a list of entries, each one answer with the several
ways customers ask for it. The ``faq`` task embeds every question of every
entry once at start, and answers a sub-question with the entry whose closest
question is most similar to it. More phrasings per entry therefore means better
matching, which is why an entry holds a tuple of questions and not one.

Accepted files (chosen by extension):

* ``.json``: ``{"name": ..., "language": ..., "entries": [...]}`` or a plain
  list of entries. An entry is ``{"id": ..., "questions": [...], "answer": ...}``;
  ``"question": "..."`` may stand in for a one-element ``"questions"``, and a
  missing ``id`` is derived from the first question (see :func:`slugify`).
  An entry may list ``"keywords"``: words and short phrases customers use for
  it that its questions do not (``"voucher"``, ``"gift certificate"``); faq's
  scoring reads them with the questions (:mod:`pipeline.tasks.faq.retrieval`).
  An entry may list the ``"regions"`` it covers and the places in each
  (``{"EU": ["Germany", "France", ...], "Canada": []}``), so a question that
  names only a country ("Do you ship to Ireland?") meets the entry that names
  its region; the lexical scoring reads every name.
  The file may list ``"synonyms"``: groups of words or phrases customers use
  for one thing (``["order", "parcel", "package", "box"]``); the lexical
  scoring reads each as the group's first, in questions and entries alike.
* ``.csv``: a header with the columns ``question`` and ``answer`` and
  optionally ``id``, ``keywords`` (``;``-separated) and ``regions``
  (``EU: Germany, France; Canada``). Rows that share an id
  add questions (and keywords) to one entry; after the first row of an id the
  answer cell may be left empty. A row without an id becomes its own entry
  with an id derived from its question.

Every problem is a :class:`~pipeline.errors.ConfigError` naming the file and
the entry (``entries[3]``) or CSV row (``row 7``, the header being row 1), so
a KB author can fix the file from the message alone. The KB is read once at
start, so a bad file stops the process before it serves anything.
"""

from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pipeline.errors import ConfigError

__all__ = ["KbEntry", "kb_languages", "kb_synonyms", "load_eval", "load_kb", "places", "slugify"]

_SLUG_MAX = 64


@dataclass(frozen=True, slots=True)
class KbEntry:
    """One answer of a knowledge base and the questions that lead to it.

    ``id`` is stable: it is what an answer reports, so clients and evaluation
    sets can refer to an entry while its wording changes.
    """

    id: str
    questions: tuple[str, ...]
    answer: str
    keywords: tuple[str, ...] = ()
    regions: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (region, the places in it), in file order


def places(entry: object) -> tuple[str, ...]:
    """Every region an entry covers and every place in them, in file order (() for an entry without regions)."""
    regions: tuple[tuple[str, tuple[str, ...]], ...] = getattr(entry, "regions", ())
    return tuple(name for region, inside in regions for name in (region, *inside))


def slugify(text: str) -> str:
    """A kebab-case id from free text: ASCII, lowercase, at most 64 characters.

    Used for entries without an id, so the same question always gives the same
    id. Accents are folded (``Café`` → ``cafe``); an empty result means the text
    had no letters or digits at all.
    """
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = re.sub(r"[^a-z0-9]+", "-", folded.lower()).strip("-")
    if len(slug) > _SLUG_MAX:
        cut = slug[:_SLUG_MAX]
        slug = cut.rsplit("-", 1)[0] if "-" in cut else cut
    return slug


def load_kb(path: Path) -> list[KbEntry]:
    """Read a knowledge base from a ``.json`` or ``.csv`` file, in file order.

    Raises ConfigError on an unreadable file, an unknown extension, a missing
    or empty answer or question, an id used twice with different answers, or a
    KB without entries. Entries that repeat an id with the same answer are
    merged, and repeated questions within an entry are kept once.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".json":
        entries = _entries_from_json(path)
    elif suffix == ".csv":
        entries = _entries_from_csv(path)
    else:
        raise ConfigError(
            f"unknown knowledge base extension {path.suffix or '(none)'!r}: expected .json or .csv",
            where=path.name,
        )
    if not entries:
        raise ConfigError("knowledge base has no entries", where=path.name)
    return entries


def kb_languages(path: Path) -> tuple[str, ...]:
    """The languages a knowledge base names (its JSON ``"language"``: a code or a list), lowercased.

    Empty for a CSV file or a JSON file that names none. faq routes a request
    to the KB that names the request's language (:mod:`pipeline.tasks.language`).
    """
    path = Path(path)
    if path.suffix.lower() != ".json":
        return ()
    data = _read_json(path)
    named = data.get("language") if isinstance(data, dict) else None
    if named is None:
        return ()
    codes = [named] if isinstance(named, str) else named
    if not isinstance(codes, list) or not all(isinstance(c, str) and c.strip() for c in codes):
        raise ConfigError('"language" must be a language code or a list of them, like "zh"', where=path.name)
    return tuple(dict.fromkeys(c.strip().lower() for c in codes))


def kb_synonyms(path: Path) -> tuple[tuple[str, ...], ...]:
    """The knowledge base's ``"synonyms"``: groups of words or phrases that mean one thing, lowercased.

    Empty for a CSV file or a JSON file that lists none. Each group has at
    least two members; its first is the word the others are read as.
    """
    path = Path(path)
    if path.suffix.lower() != ".json":
        return ()
    data = _read_json(path)
    groups = data.get("synonyms", []) if isinstance(data, dict) else []
    if not isinstance(groups, list):
        raise ConfigError('"synonyms" must be a list of lists of words', where=path.name)
    out: list[tuple[str, ...]] = []
    for index, group in enumerate(groups):
        where = f"{path.name} synonyms[{index}]"
        if not isinstance(group, list) or len(group) < 2:
            raise ConfigError("a synonym group must be a list of at least two words or phrases", where=where)
        words = tuple(dict.fromkeys(_string(w, "synonym", f"{where}[{i}]").lower() for i, w in enumerate(group)))
        out.append(words)
    seen = [w for group in out for w in group]
    twice = sorted({w for w in seen if seen.count(w) > 1})
    if twice:
        raise ConfigError(f"a synonym is in two groups: {', '.join(twice)}", where=path.name)
    return tuple(out)


def load_eval(path: Path) -> list[tuple[str, str]]:
    """Read an evaluation set as ``(question, expected entry id)`` pairs.

    The file is JSON: ``{"kb": "faq_shop.json", "items": [...]}`` or a plain
    list of items, each ``{"question": ..., "expect": ...}``. It measures how
    well a KB's phrasings cover real customer wording; checking that the
    expected ids exist in a KB is left to the caller, who knows which KB.
    """
    path = Path(path)
    data = _read_json(path)
    items = data.get("items") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ConfigError('expected a list of items or an object with an "items" list', where=path.name)
    pairs: list[tuple[str, str]] = []
    for index, item in enumerate(items):
        where = f"{path.name} items[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"item must be an object, got {type(item).__name__}", where=where)
        pairs.append((_text(item, "question", where), _text(item, "expect", where)))
    if not pairs:
        raise ConfigError("evaluation set has no items", where=path.name)
    return pairs


# -- JSON ----------------------------------------------------------------------------


def _read_json(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror or exc}", where=str(path)) from exc
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"invalid JSON: {exc}", where=path.name) from exc


def _entries_from_json(path: Path) -> list[KbEntry]:
    data = _read_json(path)
    raw = data.get("entries") if isinstance(data, dict) else data
    if not isinstance(raw, list):
        raise ConfigError('expected a list of entries or an object with an "entries" list', where=path.name)
    builder = _Builder(path.name)
    for index, item in enumerate(raw):
        where = f"{path.name} entries[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(f"entry must be an object, got {type(item).__name__}", where=where)
        if "questions" in item and "question" in item:
            raise ConfigError('entry has both "question" and "questions"; use one', where=where)
        if "questions" in item:
            questions = item["questions"]
            if not isinstance(questions, list) or not questions:
                raise ConfigError('"questions" must be a non-empty list of strings', where=where)
            texts = [_string(q, "question", f"{where} questions[{i}]") for i, q in enumerate(questions)]
        elif "question" in item:
            texts = [_text(item, "question", where)]
        else:
            raise ConfigError('entry has no "questions" (or "question")', where=where)
        entry_id = item.get("id")
        if entry_id is not None:
            entry_id = _string(entry_id, "id", where)
        keywords = item.get("keywords", [])
        if not isinstance(keywords, list):
            raise ConfigError('"keywords" must be a list of strings', where=where)
        words = [_string(k, "keyword", f"{where} keywords[{i}]") for i, k in enumerate(keywords)]
        regions = _regions_from_json(item.get("regions", {}), where)
        builder.add(entry_id, texts, _text(item, "answer", where), where, words, regions)
    return builder.entries()


def _regions_from_json(raw: object, where: str) -> list[tuple[str, tuple[str, ...]]]:
    if not isinstance(raw, dict):
        raise ConfigError('"regions" must map a region to the list of places in it', where=where)
    out = []
    for region, inside in raw.items():
        name = _string(region, "region", f"{where} regions")
        if not isinstance(inside, list):
            raise ConfigError(f"region {name!r} must list its places (or [])", where=f"{where} regions")
        out.append((name, tuple(_string(p, "place", f"{where} regions[{name!r}]") for p in inside)))
    return out


def _regions_from_csv(cell: str, where: str) -> list[tuple[str, tuple[str, ...]]]:
    """``EU: Germany, France; Canada`` → [("EU", ("Germany", "France")), ("Canada", ())]."""
    out = []
    for part in (p.strip() for p in cell.split(";")):
        if not part:
            continue
        region, _, inside = part.partition(":")
        if not region.strip():
            raise ConfigError(f"a region without a name in {part!r}", where=where)
        out.append((region.strip(), tuple(p.strip() for p in inside.split(",") if p.strip())))
    return out


# -- CSV -----------------------------------------------------------------------------


def _entries_from_csv(path: Path) -> list[KbEntry]:
    try:
        # utf-8-sig: spreadsheets often save CSV with a byte-order mark.
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            header = [(name or "").strip().lower() for name in reader.fieldnames or []]
            missing = [column for column in ("question", "answer") if column not in header]
            if missing:
                raise ConfigError(
                    f"CSV header must have the columns question and answer (id optional); missing {', '.join(missing)}",
                    where=f"{path.name} row 1",
                )
            reader.fieldnames = header
            rows = list(reader)
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror or exc}", where=str(path)) from exc
    except (UnicodeDecodeError, csv.Error) as exc:
        raise ConfigError(f"invalid CSV: {exc}", where=path.name) from exc

    builder = _Builder(path.name)
    for number, row in enumerate(rows, start=2):
        where = f"{path.name} row {number}"
        if None in row:
            raise ConfigError("row has more cells than the header", where=where)
        cells = {key: (value or "").strip() for key, value in row.items()}
        if not any(cells.values()):
            continue  # a blank line between groups of rows
        question = cells.get("question", "")
        if not question:
            raise ConfigError("empty question", where=where)
        entry_id = cells.get("id") or None
        answer = cells.get("answer", "")
        if not answer and entry_id is not None and builder.has(entry_id):
            answer = builder.answer_of(entry_id)  # continuation row of an entry
        keywords = [k.strip() for k in cells.get("keywords", "").split(";") if k.strip()]
        builder.add(entry_id, [question], answer, where, keywords, _regions_from_csv(cells.get("regions", ""), where))
    return builder.entries()


# -- shared --------------------------------------------------------------------------


class _Builder:
    """Collects entries in first-seen order, merging questions of a repeated id."""

    def __init__(self, file_name: str) -> None:
        self._file = file_name
        self._questions: dict[str, list[str]] = {}
        self._answers: dict[str, str] = {}
        self._first_seen: dict[str, str] = {}
        self._keywords: dict[str, list[str]] = {}
        self._regions: dict[str, dict[str, list[str]]] = {}

    def has(self, entry_id: str) -> bool:
        return entry_id in self._answers

    def answer_of(self, entry_id: str) -> str:
        return self._answers[entry_id]

    def add(
        self,
        entry_id: str | None,
        questions: list[str],
        answer: str,
        where: str,
        keywords: list[str] | None = None,
        regions: list[tuple[str, tuple[str, ...]]] | None = None,
    ) -> None:
        if not answer:
            raise ConfigError("missing answer", where=where)
        derived = entry_id is None
        if entry_id is None:
            entry_id = slugify(questions[0])
            if not entry_id:
                raise ConfigError(
                    f"no id given and none can be derived from the question {questions[0]!r}", where=where
                )
        if entry_id in self._answers:
            if self._answers[entry_id] != answer:
                how = "derived id" if derived else "duplicate id"
                raise ConfigError(
                    f"{how} {entry_id!r} already used with a different answer at {self._first_seen[entry_id]}",
                    where=where,
                )
        else:
            self._answers[entry_id] = answer
            self._questions[entry_id] = []
            self._keywords[entry_id] = []
            self._regions[entry_id] = {}
            self._first_seen[entry_id] = where.removeprefix(f"{self._file} ")
        known = self._questions[entry_id]
        known.extend(q for q in dict.fromkeys(questions) if q not in known)
        words = self._keywords[entry_id]
        words.extend(k for k in dict.fromkeys(keywords or []) if k not in words)
        for region, inside in regions or []:
            known_places = self._regions[entry_id].setdefault(region, [])
            known_places.extend(p for p in dict.fromkeys(inside) if p not in known_places)

    def entries(self) -> list[KbEntry]:
        return [
            KbEntry(i, tuple(qs), self._answers[i], tuple(self._keywords[i]), self._regions_of(i))
            for i, qs in self._questions.items()
        ]

    def _regions_of(self, entry_id: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
        return tuple((region, tuple(inside)) for region, inside in self._regions[entry_id].items())


def _string(value: object, what: str, where: str) -> str:
    """``value`` stripped, or a ConfigError if it is not a string or is blank."""
    if not isinstance(value, str):
        raise ConfigError(f"{what} must be a string, got {type(value).__name__}", where=where)
    text = value.strip()
    if not text:
        raise ConfigError(f"empty {what}", where=where)
    return text


def _text(item: dict[str, Any], key: str, where: str) -> str:
    """The required string field ``key`` of a JSON object."""
    if item.get(key) is None:
        raise ConfigError(f"missing {key}", where=where)
    return _string(item[key], key, where)
