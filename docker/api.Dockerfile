# API image: FastAPI behind uvicorn. The API never imports torch, but the project is one package,
# so the CPU build keeps this image small; the worker image carries CUDA.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY promptehr ./promptehr
COPY model ./model
COPY service ./service
COPY worker ./worker
COPY cli ./cli
COPY migrations ./migrations
# The source is removed once installed: a promptehr/ folder in the working directory would shadow
# the installed package (python -m puts the working directory first on sys.path).
# DL3013 asks for pinned versions: this installs the project itself, its pins are in pyproject.toml.
# hadolint ignore=DL3013
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 \
 && pip install ".[service]" \
 && rm -rf /src
COPY docker/entrypoint-api.sh /usr/local/bin/entrypoint-api.sh
# The model volume's mount point exists and belongs to the app user: Docker copies an image directory's
# ownership into a fresh named volume, so without this the volume comes up root-owned and the worker
# cannot write a checkpoint.
RUN useradd --create-home --uid 10001 app && chmod +x /usr/local/bin/entrypoint-api.sh \
 && mkdir -p /var/lib/promptehr/models \
 && chown -R 10001:10001 /var/lib/promptehr
USER 10001:10001
WORKDIR /var/lib/promptehr
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --retries=5 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=2)"]
ENTRYPOINT ["/usr/local/bin/entrypoint-api.sh"]
