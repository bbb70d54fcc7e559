# One image for the API and the worker: `bonsai serve` or `bonsai worker`.
# PyPI's torch wheel for Linux x86_64 is a CUDA build, so the same image trains on a GPU.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    BONSAI_HOME=/var/lib/bonsai \
    BONSAI_DATA_DIR=/var/lib/bonsai/data

# gcc builds the engine's C kernels on first use (bonsai/native.py); without it
# the engine runs on torch's slower CPU kernels.
RUN apt-get update \
    && apt-get install --yes --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 bonsai \
    && mkdir -p /var/lib/bonsai/data /var/lib/bonsai/artifacts \
    && chown -R bonsai:bonsai /var/lib/bonsai

WORKDIR /app

# Dependencies first, so that a source change does not reinstall torch.
COPY pyproject.toml README.md ./
RUN mkdir bonsai backend worker \
    && touch bonsai/__init__.py backend/__init__.py worker/__init__.py \
    && pip install . \
    && pip uninstall --yes bonsai-net-studio

COPY bonsai ./bonsai
COPY backend ./backend
COPY worker ./worker
COPY alembic ./alembic
COPY alembic.ini ./
COPY frontend ./frontend
# Editable, so that the migrations and pages are found beside the packages in /app.
RUN pip install --no-deps --editable .

USER bonsai
EXPOSE 8000
# A non-loopback address needs BONSAI_TOKEN.
CMD ["bonsai", "serve", "--host", "0.0.0.0", "--port", "8000"]
