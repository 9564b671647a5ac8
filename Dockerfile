# WBC classifier service. Build: podman build --format docker -t wbc .
# TF_PACKAGE selects TensorFlow: the default CPU build, or e.g. "tensorflow[and-cuda]==2.21.0"
# for a GPU-capable image (untested here: no GPU on the build machines).
FROM python:3.11-slim

ARG TF_PACKAGE=tensorflow-cpu==2.21.0
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    WBC_HOST=0.0.0.0 \
    WBC_PORT=8000 \
    WBC_WORKERS=1 \
    WBC_MODEL_DIR=/srv/models/wbc-classifier

WORKDIR /srv

# Dependencies first, from pyproject.toml alone: a code change does not reinstall TensorFlow.
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; open('/tmp/requirements.txt', 'w').write('\n'.join(d for d in deps if not d.startswith('tensorflow')))" \
 && pip install "$TF_PACKAGE" -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin wbc

# Serving code: the app and wbc_core, what it shares with training (preprocessing, network
# builder for Grad-CAM, calibration, OOD statistics); the training package is left out.
COPY app/ app/
COPY wbc_core/ wbc_core/
COPY models/ models/

USER 10001
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD python -c "import urllib.request, sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/ready', timeout=4).status != 200)"
CMD ["python", "-m", "app"]
