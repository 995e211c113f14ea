"""synthseg-tf: synthetic training data for segmentation and classification (TensorFlow/Keras)."""
from setuptools import find_packages, setup

# The TFX code lives in pipeline/ and components/ at the repository root but is installed under the
# project's own namespace, never as the generic top-level names ``pipeline`` / ``components``:
#   pipeline/   -> synthseg_tf_tfx.pipeline     (configs, pipeline, module_file, runners)
#   components/ -> synthseg_tf_tfx.components   (SyntheticGeneration)
# ``synthseg_tf_tfx`` itself is an implicit namespace package (no __init__.py). TFX records these
# installed names in the pipeline IR (module_file functions, executor classes) and imports them
# again in every component's process or container.
TFX_NAMESPACE = "synthseg_tf_tfx"
TFX_DIRS = {"pipeline": "pipeline", "components": "components"}  # subpackage -> folder at the repository root


def _tfx_packages():
    packages, package_dir = [], {}
    for sub, folder in TFX_DIRS.items():
        root = f"{TFX_NAMESPACE}.{sub}"
        packages.append(root)
        package_dir[root] = folder
        packages += [f"{root}.{p}" for p in find_packages(where=folder)]
    return packages, package_dir


TFX_PACKAGES, TFX_PACKAGE_DIR = _tfx_packages()

setup(
    name="synthseg-tf",
    version="0.1.0",
    description="pix2pix-based synthetic data for segmentation and classification, with TFX and Beam",
    long_description=open("README.md", encoding="utf-8").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["synthseg_tf", "synthseg_tf.*"]) + TFX_PACKAGES,
    package_dir=TFX_PACKAGE_DIR,
    include_package_data=True,
    install_requires=[
        "tensorflow>=2.15,<2.16",
        "keras>=2.15,<2.16",
        "tensorflow-addons>=0.23,<0.24",
        "tensorflow-gan>=2.1,<2.2",
        "tensorflow-probability>=0.23,<0.24",
        "segmentation-models>=1.0.1,<1.1",
        "opencv-python-headless>=4.8,<5",
        "apache-beam[gcp]>=2.74,<3",
        "numpy>=1.26,<2",
        "pillow>=10",
        "scikit-learn>=1.3",
        "matplotlib>=3.7",
        "cityscapesscripts>=2.2",
        "setuptools<81",
        "dill",
    ],
    extras_require={
        "pipeline": ["tfx>=1.15.1,<1.16", "kfp-pipeline-spec>=0.1.16,<0.2"],
        "test": ["pytest>=7", "pytest-xdist>=3"],
    },
    entry_points={"console_scripts": ["synthseg=synthseg_tf.cli:main"]},
)
