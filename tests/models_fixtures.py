"""Session-wide model fixtures: tiny random models, their exports, one Infer for every task.

Loaded as a pytest plugin by ``tests/conftest.py``; a fixture builds nothing
until a test asks for it. Tiny models export into a temporary cache (seconds);
all-MiniLM-L6-v2 exports once into the project's model cache
(``PIPELINE_MODEL_CACHE_DIR``, default ``.cache/models``) and is linked into the
temporary one, so later sessions reuse it.

``model_settings`` keeps windows and chunks small (64-token QA windows with a
16-token stride, 32-token chunks), so modest texts already make many parts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.models.export import ExportedModel, ensure_exported
from pipeline.models.tokenizer import Tokenizer, load_tokenizer
from pipeline.settings import PROJECT_ROOT, Settings
from pipeline.stages.infer import Infer, build_infer
from tests.tiny_models import MINILM, build_tiny_classifier, build_tiny_qa_model

SHOP_KB = PROJECT_ROOT / "pipeline" / "data" / "faq_shop.json"


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Directories of the tiny QA model and the tiny 3-label classifier."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {"qa": build_tiny_qa_model(root / "qa"), "classify": build_tiny_classifier(root / "classify")}


@pytest.fixture(scope="session")
def model_settings(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Settings:
    return Settings.of(
        qa_model=str(tiny_models["qa"]),
        classify_model=str(tiny_models["classify"]),
        embed_model=str(MINILM),
        faq_model="",
        faq_kb=SHOP_KB,
        faq_multilingual_model="",  # English only here; tests/unit/test_multilingual.py serves Chinese
        model_cache_dir=tmp_path_factory.mktemp("model-cache"),
        qa_max_length=64,
        qa_stride=16,
        chunk_tokens=32,
        provider="auto",
        ort_intra_threads=1,
        ort_inter_threads=1,
        batch_max_parts=8,
        batch_max_tokens=400,
    )


@pytest.fixture(scope="session")
def exported(model_settings: Settings) -> dict[str, ExportedModel]:
    """The ONNX export of every kind: qa and classify (tiny), embed (MiniLM)."""
    persistent = model_settings.replace(model_cache_dir=Settings.from_env().models.model_cache_dir)
    minilm = ensure_exported(str(MINILM), "embed", persistent)
    link = model_settings.models.model_cache_dir / minilm.path.name
    if not link.exists():
        link.symlink_to(minilm.path, target_is_directory=True)
    return {
        kind: ensure_exported(model_settings.model_for(kind), kind, model_settings)
        for kind in ("qa", "classify", "embed")
    }


@pytest.fixture(scope="session")
def tokenizers(model_settings: Settings) -> dict[str, Tokenizer]:
    """The split side's tokenizer of every task, loaded from the model directories."""
    return {task: load_tokenizer(model_settings.model_for(task)) for task in ("qa", "classify", "embed", "faq")}


@pytest.fixture(scope="session")
def infer(model_settings: Settings, exported: dict[str, ExportedModel]) -> Infer:
    """One Infer serving all four tasks (faq with the shipped shop KB)."""
    return build_infer(model_settings)
