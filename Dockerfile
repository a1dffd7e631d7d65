# voice-router: one uvicorn worker per container; scale with replicas sharing Redis (STATE_URL=redis://…).
# Bookworm pinned: on trixie (what the plain tag now follows) libasound2 and libssl3 are t64-renamed, and the
# Speech SDK is built against Debian 12.
FROM python:3.11-slim-bookworm AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The Azure Speech SDK loads OpenSSL and ALSA at run time (legacy-services.md §1.1).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl3 libasound2 ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
COPY router ./router
COPY flags ./flags
COPY realtime_pipeline ./realtime_pipeline
COPY legacy_pipeline ./legacy_pipeline
COPY emulators ./emulators
RUN pip install .

RUN useradd --create-home --uid 10001 voicerouter && mkdir -p /app/var && chown voicerouter /app/var
USER voicerouter

ENV STATE_URL=sqlite:////app/var/state.db
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2).status == 200 else 1)"

# The app factory reads its settings from the environment; a missing required setting stops start-up.
CMD ["python", "-m", "router", "serve", "--host", "0.0.0.0", "--port", "8000"]
