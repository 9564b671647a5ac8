# WBC classifier service, two targets from one file (podman build --format docker ...):
#   lean (the default: the last stage, `serve`, is it): the serving set, no TensorFlow,
#       no SciPy; the CPU path runs model.tflite in LiteRT.
#       podman build --format docker -t localhost/wbc-classifier:2.0.0 .
#   gpu: the lean image plus TensorFlow with CUDA; serves the SavedModel on a GPU.
#       podman build --format docker --target gpu -t localhost/wbc-classifier:2.0.0-gpu .

# Dependencies into a virtual environment, built where pip is.
FROM python:3.11-slim AS deps
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY pyproject.toml /tmp/
RUN python -c "import tomllib; deps = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(deps))" \
 && python3.11 -m venv /opt/venv \
 && /opt/venv/bin/pip install -r /tmp/requirements.txt \
 && find /opt/venv -depth -name __pycache__ -type d -exec rm -rf {} +

# The runtime: Debian's Python alone (same interpreter path as the venv's) and the venv.
FROM debian:bookworm-slim AS lean
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/apt/archives/*.deb \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin wbc
COPY --from=deps /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    WBC_HOST=0.0.0.0 \
    WBC_PORT=8000 \
    WBC_WORKERS=1 \
    WBC_MODEL_DIR=/srv/models/wbc-classifier
WORKDIR /srv

# Serving code: the app and wbc_core, what it shares with training (preprocessing, the
# localiser, calibration, OOD statistics, Grad-CAM); the training package is left out.
COPY app/ app/
COPY wbc_core/ wbc_core/
COPY models/ models/

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4).status != 200)"
CMD ["python", "-m", "app"]

# TensorFlow for the GPU runtime (WBC_DEVICE=gpu runs the SavedModel), added to the venv
# where pip is. TF_PACKAGE=tensorflow-cpu==2.21.0 gives a CPU image that can also be told
# WBC_RUNTIME=tensorflow.
FROM deps AS gpu-deps
ARG TF_PACKAGE="tensorflow[and-cuda]==2.21.0"
RUN /opt/venv/bin/pip install "$TF_PACKAGE" \
 && find /opt/venv -depth -name __pycache__ -type d -exec rm -rf {} +

FROM lean AS gpu
COPY --from=gpu-deps /opt/venv /opt/venv
ENV TF_CPP_MIN_LOG_LEVEL=2 \
    WBC_DEVICE=gpu

# The default target (the last stage): the lean image.
FROM lean AS serve
