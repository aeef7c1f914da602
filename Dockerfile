# One image for every finsent service: Airflow components, Celery workers, the dashboard, migrations.
#
#   docker compose build                                  # default image (see TORCH_INDEX_URL below)
#   docker build --build-arg TORCH_INDEX_URL=<index> .    # pick the torch 2.13.0 build
#
# TORCH_INDEX_URL: the package index torch==2.13.0 is installed from. Point it at PyTorch's CPU wheel index
# for a slim CPU image (scheduler, default workers, dashboard), or at its CUDA wheel index matching the
# hosts' driver for GPU workers. Left empty, pip's default index is used, whose Linux wheel bundles CUDA:
# it runs on CPU and GPU hosts alike, at several GB more image size.
FROM python:3.11-slim

ARG TORCH_INDEX_URL=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    FINSENT_HOME=/var/lib/finsent \
    AIRFLOW_HOME=/opt/airflow \
    AIRFLOW__CORE__DAGS_FOLDER=/opt/finsent/dags \
    AIRFLOW__CORE__LOAD_EXAMPLES=False

# curl: healthchecks; libpq5: psycopg at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl libpq5 \
    && rm -rf /var/lib/apt/lists/*

RUN useradd --uid 50000 --create-home --home-dir /home/finsent finsent \
    && mkdir -p /opt/finsent /opt/airflow/logs /opt/airflow/auth /var/lib/finsent/models \
    && chown -R finsent /opt/airflow /var/lib/finsent
WORKDIR /opt/finsent

# torch first and exactly pinned, from the chosen index; the project's own pin then finds it satisfied.
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0

# Dependencies in their own layer: empty package dirs are enough for an editable install to resolve them,
# so editing the code does not reinstall Airflow.
COPY pyproject.toml README.md ./
RUN mkdir -p pipeline models \
    && touch pipeline/__init__.py models/__init__.py \
    && pip install -e . \
    && rm -rf pipeline models

COPY sql ./sql
COPY models ./models
COPY pipeline ./pipeline
COPY dags ./dags
COPY dashboard ./dashboard

USER finsent
EXPOSE 8080 8501
CMD ["airflow", "version"]
