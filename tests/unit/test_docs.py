"""README.md and docs/: what they say about settings, commands, links, ACLs and metrics is what the code does.

A newcomer checks the documentation against the code by hand; these checks
do it on every run, so a renamed setting, a changed default, a removed
command or a moved page fails a test instead of misleading a reader.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest

from pipeline.cli import build_parser
from pipeline.operations.acls import bindings
from pipeline.settings import PROJECT_ROOT, Settings, setting_fields
from pipeline.settings_env import render

README = PROJECT_ROOT / "README.md"
DOCS = sorted((PROJECT_ROOT / "docs").glob("*.md"))
PAGES = [README, *DOCS]
FIELDS = setting_fields()
# Placeholders the docs use for "some setting" (docs/performance.md: --also PIPELINE_X=V).
PLACEHOLDERS = {"PIPELINE_X", "PIPELINE_SETTING"}


def documented_defaults(pages: list[Path]) -> dict[str, list[tuple[Path, str]]]:
    """Each ``PIPELINE_*`` variable in a settings table (header ``| … | default | … |``) with its default cells."""
    found: dict[str, list[tuple[Path, str]]] = {}
    for page in pages:
        in_table = False
        for line in page.read_text().splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")] if line.startswith("|") else []
            if not cells:
                in_table = False
            elif len(cells) >= 3 and cells[1] == "default":
                in_table = True
            elif in_table and not set(cells[0]) <= set("- "):
                names = re.findall(r"`(PIPELINE_[A-Z0-9_]+)`", cells[0])
                for name in names:
                    # A row naming several variables states one default for all: no single value to check.
                    found.setdefault(name, []).append((page, cells[1] if len(names) == 1 else ""))
    return found


def expected_default(name: str) -> str | None:
    """The default as the docs write it (paths relative to the checkout); None when made at run time."""
    field = FIELDS[name.removeprefix("PIPELINE_").lower()]
    if field.default is dataclasses.MISSING:
        return None  # a default_factory (a model path inside an installed package)
    value = field.default
    if isinstance(value, Path):
        value = value.relative_to(PROJECT_ROOT)
    return render(value)


def stated(cell: str) -> str | None:
    """The value a default cell states: ``empty``, or its first `code` span; None when it states none."""
    if cell == "empty":
        return ""
    code = re.match(r"`([^`]*)`", cell)
    return code.group(1) if code else None


def test_every_setting_is_in_a_settings_table_with_its_default() -> None:
    found = documented_defaults(PAGES)
    missing = sorted(f"PIPELINE_{name.upper()}" for name in FIELDS if f"PIPELINE_{name.upper()}" not in found)
    assert not missing, f"not in any settings table (docs/operations.md, ## Settings): {missing}"
    wrong = []
    for name, rows in found.items():
        expected = expected_default(name) if name.removeprefix("PIPELINE_").lower() in FIELDS else None
        for page, cell in rows:
            value = stated(cell)
            if expected is not None and value is not None and value != expected:
                wrong.append(f"{page.name}: {name} says {value!r}, Settings has {expected!r}")
    assert not wrong, wrong


def test_every_documented_variable_is_a_setting() -> None:
    unknown = []
    for page in PAGES:
        for match in re.finditer(r"PIPELINE_[A-Z0-9_]+(\*?)", page.read_text()):
            name = match.group(0).rstrip("*")
            if name.endswith("_") or match.group(1):
                continue  # a family of settings: PIPELINE_SASL_*, PIPELINE_FAQ_...
            if name not in PLACEHOLDERS and name.removeprefix("PIPELINE_").lower() not in FIELDS:
                unknown.append(f"{page.name}: {name}")
    assert not unknown, f"not Settings fields: {sorted(set(unknown))}"


def test_the_settings_table_check_fails_on_a_wrong_or_missing_default(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "| variable | default | meaning |\n| --- | --- | --- |\n"
        "| `PIPELINE_CHUNK_FLUSH_MS` | `50` | wrong |\n| `PIPELINE_PREFIX` | empty | right |\n"
    )
    found = documented_defaults([page])
    assert set(found) == {"PIPELINE_CHUNK_FLUSH_MS", "PIPELINE_PREFIX"}
    assert stated(found["PIPELINE_CHUNK_FLUSH_MS"][0][1]) != expected_default("PIPELINE_CHUNK_FLUSH_MS")
    assert stated(found["PIPELINE_PREFIX"][0][1]) == expected_default("PIPELINE_PREFIX")


def _shown_commands() -> list[str]:
    """README's ``.venv/bin/pipeline …`` command lines (comments and redirections cut), and ``pipeline --help``."""
    text = README.read_text()
    lines = [line.split("  #")[0].split(" > ")[0].strip() for line in text.splitlines()]
    shown = [line for line in lines if line.startswith(".venv/bin/pipeline ")]
    return shown + [span for span in re.findall(r"`(pipeline --help)`", text)]


def test_the_readme_commands_are_commands_of_the_cli() -> None:
    commands = _shown_commands()
    assert len(commands) > 10
    for line in commands:
        words = shlex.split(line)[1:]
        try:
            args = build_parser().parse_args(words)
        except SystemExit as exc:
            if exc.code == 0 and "--help" in words:
                continue  # help printed: the command exists
            pytest.fail(f"README shows a command the CLI refuses: {line}")
        assert callable(args.func), line


def test_the_make_targets_the_docs_name_exist() -> None:
    targets = set(re.findall(r"^([a-zA-Z0-9_-]+):[^#\n]*## ", (PROJECT_ROOT / "Makefile").read_text(), re.M))
    named = {t for page in PAGES for t in re.findall(r"`make ([a-z][a-z0-9-]*)", page.read_text())}
    named |= set(re.findall(r"^make ([a-z][a-z0-9-]*)", README.read_text(), re.M))
    assert {"demo", "test", "help"} <= named
    assert not named - targets, sorted(named - targets)


def test_relative_links_and_named_files_exist() -> None:
    broken = []
    for page in PAGES:
        text = page.read_text()
        for link in re.findall(r"\]\(([^)#\s]+)", text):
            if not link.startswith(("http://", "https://")) and not (page.parent / link).exists():
                broken.append(f"{page.name}: ({link})")
        for path in re.findall(r"`((?:docs|pipeline|ops|tests|topics)/[A-Za-z0-9_./-]+)`", text):
            if not (PROJECT_ROOT / path.rstrip(".")).exists():
                broken.append(f"{page.name}: `{path}`")
    assert not broken, broken


def test_security_doc_states_the_acl_count_pipeline_topics_acls_prints() -> None:
    text = (PROJECT_ROOT / "docs" / "security.md").read_text()
    counts = {int(n) for n in re.findall(r"topics: ACLs: (\d+) created", text)} - {0}
    counts |= {int(n) for n in re.findall(r"(\d+) unchanged", text)} - {0}
    assert counts == {len(bindings(Settings()))}, "docs/security.md: the `pipeline topics apply` sample"
    from pipeline.flow import STAGE_NAMES

    section = text.split("## Principals and ACLs", 1)[1].split("\n## ", 1)[0]
    principals = {acl.principal.removeprefix("User:") for acl in bindings(Settings())}
    assert set(STAGE_NAMES) <= principals and "`User:{prefix}{stage}`" in section
    for principal in sorted(principals - set(STAGE_NAMES)):
        assert f"`User:{{prefix}}{principal}`" in section, f"docs/security.md: no row for principal {principal}"


def metric_rows(text: str) -> set[str]:
    """Metric names in the first column of tables headed ``| metric | what |``."""
    names: set[str] = set()
    in_table = False
    for line in text.splitlines():
        if not line.startswith("|"):
            in_table = False
        elif line.replace(" ", "").startswith("|metric|"):
            in_table = True
        elif in_table:
            names |= set(re.findall(r"`(pipeline_[a-z0-9_]+)", line.split("|")[1]))
    return names


def test_the_metrics_table_lists_what_members_export() -> None:
    import pipeline.runtime.metrics as metrics

    # prometheus-client keeps a Counter's name without _total.
    exported = {m._name for m in vars(metrics).values() if hasattr(m, "_name") and hasattr(m, "_type")}
    documented = {
        name.removesuffix("_total") for name in metric_rows((PROJECT_ROOT / "docs" / "operations.md").read_text())
    }
    assert documented == exported, (
        f"only in the docs: {sorted(documented - exported)}, undocumented: {sorted(exported - documented)}"
    )
