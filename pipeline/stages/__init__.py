"""The stages: one module or folder per stage, each with a ``build(settings) -> StageLogic``.

:data:`BUILDERS` links each stage of the map (:data:`pipeline.flow.STAGES`)
to its code with real imports, made when a member builds its stage, so a
member loads its own stage's models and nobody else's. A stage imports
tasks, models, messages and records, never the runtime: what it needs from
the member comes through the context the runtime gives it.
"""

from __future__ import annotations

from collections.abc import Callable

from pipeline.records import StageLogic
from pipeline.settings import Settings


def _filter(settings: Settings) -> StageLogic:
    from pipeline.stages.filter.stage import build

    return build(settings)


def _split(settings: Settings) -> StageLogic:
    from pipeline.stages.split import build

    return build(settings)


def _infer(settings: Settings) -> StageLogic:
    from pipeline.stages.infer import build

    return build(settings)


def _merge(settings: Settings) -> StageLogic:
    from pipeline.stages.merge import build

    return build(settings)


def _generate(settings: Settings) -> StageLogic:
    from pipeline.stages.generate.stage import build

    return build(settings)


BUILDERS: dict[str, Callable[[Settings], StageLogic]] = {
    "filter": _filter,
    "split": _split,
    "infer": _infer,
    "merge": _merge,
    "generate": _generate,
}


def build(name: str, settings: Settings) -> StageLogic:
    """The logic of stage ``name`` (its models loaded): what the runtime runs for one member."""
    try:
        builder = BUILDERS[name]
    except KeyError:
        raise KeyError(f"no stage {name!r}; stages: {', '.join(BUILDERS)}") from None
    return builder(settings)
