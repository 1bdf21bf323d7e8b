# The support-cases worker (and `python -m starter`) for docker-compose.yml or any container
# platform: slim, non-root, dependencies from pyproject.toml. Configure it with TEMPORAL_* (the
# cluster) and CASES_* (see README "Settings"); CASES_METRICS_PORT serves Prometheus metrics.
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CASES_LOG_FORMAT=json \
    CASES_DATA_DIR=/app/.data

WORKDIR /app

# Dependencies first (their own layer, rebuilt only when pyproject.toml changes): exactly the
# [project] dependencies, read from pyproject.toml.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

COPY settings.py logs.py worker.py ./
COPY workflows ./workflows
COPY activities ./activities
COPY runtime ./runtime
COPY starter ./starter

RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin cases \
    && mkdir -p /app/.data && chown cases /app/.data
USER 10001

EXPOSE 9464
CMD ["python", "worker.py"]
