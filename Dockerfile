# The container image of the TFX pipeline on Vertex AI Pipelines, and of the Dataflow workers with
# `synthseg pipeline compile --dataflow` (--sdk_container_image is this image):
#
#   docker build -t gcr.io/PROJECT/synthseg-tfx:latest . && docker push gcr.io/PROJECT/synthseg-tfx:latest
#   synthseg pipeline compile --target vertex --image gcr.io/PROJECT/synthseg-tfx:latest ...
#
# The locked dependency set (requirements.lock: TFX 1.15.1, TF 2.15.1, Beam 2.74.0; see
# ../shared/STACK.md), then this package installed, not editable: the components import
# synthseg_tf_tfx.pipeline.module_file and synthseg_tf_tfx.components.synthetic_generation from
# site-packages. Vertex runs each component with the command the compiled spec names
# (python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor ...), which replaces
# the entrypoint; Dataflow starts its workers through the entrypoint, Beam's boot program.
ARG BEAM_VERSION=2.74.0
FROM apache/beam_python3.10_sdk:${BEAM_VERSION} AS beam_sdk

FROM python:3.10-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SM_FRAMEWORK=tf.keras

WORKDIR /build
COPY requirements.lock ./
RUN pip install -r requirements.lock

COPY setup.py README.md ./
COPY synthseg_tf ./synthseg_tf
COPY pipeline ./pipeline
COPY components ./components
# Installed, then the sources removed: nothing can import a top-level `pipeline`/`components` here.
RUN pip install --no-deps --no-build-isolation . \
    && cd / && rm -rf /build \
    && python -c "import synthseg_tf_tfx.pipeline.module_file, synthseg_tf_tfx.components.synthetic_generation"

COPY --from=beam_sdk /opt/apache/beam /opt/apache/beam
WORKDIR /
ENTRYPOINT ["/opt/apache/beam/boot"]
