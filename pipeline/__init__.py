"""The synthseg-tf TFX pipeline: configs, pipeline definition, user module and runners.

Installed as ``synthseg_tf_tfx.pipeline`` (setup.py maps this folder there; ``components/``
becomes ``synthseg_tf_tfx.components``), the names the pipeline gives TFX for its user module and
executors. The command line runs it: ``synthseg pipeline run`` / ``synthseg pipeline compile``.

- :mod:`pipeline.configs`: names, paths, sizes, steps (env-overridable, ``SYNTHSEG_TFX_*``);
- :mod:`pipeline.pipeline`: :func:`~pipeline.pipeline.create_pipeline`;
- :mod:`pipeline.module_file`: ``preprocessing_fn`` (Transform) and ``run_fn`` (Trainer);
- :mod:`pipeline.classification_pipeline` (``--task classification``), with its user modules
  :mod:`pipeline.classification_module_file` (CNN classifier, ``MacroF1``) and
  :mod:`pipeline.classification_gan_module_file` (class-conditional GAN);
- :mod:`pipeline._common`: what the user modules share (``custom_config`` settings, the Keras fit loop,
  the serving export's tf.Example signatures);
- :mod:`pipeline.local_runner`: run with ``LocalDagRunner`` + SQLite ML Metadata;
- :mod:`pipeline.kubeflow_v2_runner`: compile for Vertex AI Pipelines (offline, JSON only).

Importing this package does not import TFX; the submodules above (except ``configs``) do.
"""
import synthseg_tf  # noqa: F401,E402  (its environment settings before TFX loads TensorFlow)

