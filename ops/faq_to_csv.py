"""Write a JSON knowledge base as CSV (id,question,keywords,answer[,regions]), for the ``faq`` task.

The shipped ``pipeline/data/faq_shop.csv`` is generated with this from
``faq_shop.json`` so the two never drift apart; rerun it after editing the
JSON. One row per question; the answer, the keywords (``;``-separated) and the
regions (``EU: Germany, France; Canada``, a column only when some entry has
them) are written on the first row of each entry only, as the loader lets later rows of
the same id leave them empty.

    python ops/faq_to_csv.py pipeline/data/faq_shop.json [out.csv]
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from pipeline.tasks.faq.kb import load_kb


def main(argv: list[str]) -> int:
    if not 1 <= len(argv) <= 2:
        print(__doc__, file=sys.stderr)
        return 2
    source = Path(argv[0])
    target = Path(argv[1]) if len(argv) == 2 else source.with_suffix(".csv")
    entries = load_kb(source)
    with_regions = any(entry.regions for entry in entries)
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["id", "question", "keywords", "answer"] + (["regions"] if with_regions else []))
        for entry in entries:
            regions = "; ".join(f"{r}: {', '.join(inside)}" if inside else r for r, inside in entry.regions)
            for index, question in enumerate(entry.questions):
                keywords, answer = ("; ".join(entry.keywords), entry.answer) if index == 0 else ("", "")
                row = [entry.id, question, keywords, answer]
                writer.writerow(row + ([regions if index == 0 else ""] if with_regions else []))
    print(f"wrote {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
