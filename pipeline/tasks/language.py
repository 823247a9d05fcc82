"""Which language a request is in, and which (model, knowledge base) pair of a task serves it.

faq can serve two pairs: the default one (``faq_model`` or ``embed_model``
with ``faq_kb``, all-MiniLM-L6-v2 and the English shop by default) and a
multilingual one (``faq_multilingual_model`` with ``faq_multilingual_kb``,
multilingual-e5-small and the Chinese shop). A request goes to the
multilingual pair when its language is one its knowledge base names, and to
the default pair otherwise, so English keeps the English model's accuracy.

A *route* is the Settings a pair sees: the default route is the settings
themselves; the multilingual route replaces ``faq_model``, ``faq_kb`` and
``faq_min_score``. split loads a tokenizer and infer a session per route key
(``faq`` for the default, ``faq:zh`` for each language of the multilingual KB),
and every faq part carries its request's language in ``meta["lang"]``, so infer
picks the session from the part alone.

The language is the request's ``lang`` field when it has one (``zh``,
``zh-Hant`` and ``zh-TW`` all read as ``zh``), else detected from the text by
script: Han characters make it Chinese, kana Japanese, Hangul Korean, anything
else English. That is all routing needs: the question is which model can read
the text, not which Latin-script language it is.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Container
from pathlib import Path

from pipeline.errors import ConfigError, InvalidRequestError
from pipeline.messages import Part, Request
from pipeline.settings import FaqSettings, Settings

_LANG = re.compile(r"^[a-z]{2,3}(?:[-_][a-z0-9]{2,8})*$")


def detect_language(text: str) -> str:
    """``zh``, ``ja``, ``ko`` or ``en``, from the scripts ``text`` is written in."""
    han = False
    for ch in text:
        code = ord(ch)
        if 0x3040 <= code <= 0x30FF:  # hiragana, katakana
            return "ja"
        if 0xAC00 <= code <= 0xD7AF or 0x1100 <= code <= 0x11FF:  # Hangul syllables, jamo
            return "ko"
        if 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0xF900 <= code <= 0xFAFF:
            han = True
    return "zh" if han else "en"


def request_language(request: Request) -> str:
    """The request's ``lang`` (its primary subtag, lowercased), else the language of its text."""
    if request.lang is None:
        return detect_language(request.text or "")
    lang = request.lang.strip().lower()
    if not _LANG.match(lang):
        raise InvalidRequestError(
            f"lang {request.lang!r} is not a language code like 'zh' or 'en'", request_id=request.id
        )
    return re.split(r"[-_]", lang, maxsplit=1)[0]


def route_key(task: str, lang: str) -> str:
    """The key split and infer load a route's tokenizer and session under."""
    return f"{task}:{lang}"


def multilingual_languages(faq: FaqSettings) -> tuple[str, ...]:
    """The languages the multilingual faq pair serves (those its KB names); () when it is off."""
    if not faq.faq_multilingual_model:
        return ()
    languages = _kb_languages(Path(faq.faq_multilingual_kb))
    if not languages:
        raise ConfigError(
            'the multilingual faq knowledge base names no language: add "language": "zh" (or a list)',
            where=str(faq.faq_multilingual_kb),
        )
    return languages


# Tasks that retrieve from the faq knowledge base (chat retrieves as faq does): the ones routed by language.
RETRIEVING = frozenset({"faq", "chat"})


def task_routes(task: str, settings: Settings) -> dict[str, Settings]:
    """Every route of ``task`` by key: ``{task: settings}``, plus ``<task>:<lang>`` routes for faq and chat."""
    routes = {task: settings}
    languages = multilingual_languages(settings.faq) if task in RETRIEVING else ()
    if languages:
        multilingual = settings.replace(
            faq_model=settings.faq.faq_multilingual_model,
            faq_kb=settings.faq.faq_multilingual_kb,
            faq_min_score=settings.faq.faq_multilingual_min_score,
            # The fusion weights and margin were tuned on the English shop with MiniLM;
            # e5's scores bunch differently, so the Chinese route keeps pure dense scoring.
            faq_answer_weight=0.0,
            faq_lexical_weight=0.0,
            faq_title_weight=0.0,
            faq_unsure_margin=0.0,
        )
        routes.update({route_key(task, lang): multilingual for lang in languages})
    return routes


def request_route(request: Request, settings: Settings) -> str:
    """The route key of ``request``: ``<task>:<lang>`` when the multilingual pair reads it, else the task."""
    if request.task in RETRIEVING:
        lang = request_language(request)
        if lang in multilingual_languages(settings.faq):
            return route_key(request.task, lang)
    return request.task


def route_settings(request: Request, settings: Settings) -> Settings:
    """The Settings of the route ``request`` takes (what its model and KB are)."""
    return task_routes(request.task, settings)[request_route(request, settings)]


def part_route(part: Part, served: Container[str]) -> str:
    """The route key of ``part`` among the keys ``served``: its language's route, else its task."""
    lang = part.meta.get("lang") if isinstance(part.meta, dict) else None
    if isinstance(lang, str):
        key = route_key(part.task, lang)
        if key in served:
            return key
    return part.task


@functools.lru_cache(maxsize=16)
def _kb_languages(path: Path) -> tuple[str, ...]:
    # Read once per file: split asks for every request.
    from pipeline.tasks.faq.kb import kb_languages

    return kb_languages(path)
