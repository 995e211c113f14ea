"""Vertex AI Pipelines: the container image's contents and the compiled spec, offline.

(a) The Docker build context is assembled in Python from ``.dockerignore`` (what ``docker build .``
would send); every ``COPY`` of the ``Dockerfile`` finds its sources there, and the lock file is what
the image installs. The context is then installed the way the image's ``pip install .`` lays it
out (setuptools' ``build_py``: a wheel's pure-Python contents) and, in a fresh interpreter that sees
only that layout (no checkout, no editable finder), every module, function and executor class the
compiled spec names is imported, and the generic names ``pipeline``/``components`` do not exist.
(b) ``synthseg pipeline compile --target vertex`` runs in-process with the network cut off, and
the JSON holds the components, the image, the Dataflow Beam args and the runtime parameter.
(c) The command line's input errors (``compile`` and ``run``) are one line and exit 2 (3 for an
output conflict) before TFX is imported.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

import synthseg_tf  # noqa: E402,F401  (environment settings before TensorFlow loads)

IMAGE = "europe-west4-docker.pkg.dev/test-project/synthseg/synthseg-tfx:test"
PROJECT, REGION = "test-project", "europe-west4"
ROOT = "gs://bucket/tfx/synthseg"
NAMES = ["sky", "building", "road", "sidewalk", "vegetation", "car", "person", "pole", "sign"]
COMPONENTS = ["ImportExampleGen", "StatisticsGen", "SchemaGen", "ExampleValidator", "Transform", "Trainer", "Evaluator",
              "Pusher"]
RUN_EXECUTOR = "tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor"
# The project's own importable names a compiled spec may hold (module_file functions, executor
# classes, TFMA metric modules).
OWN_NAME = re.compile(r"synthseg_tf(?:_tfx)?\.[A-Za-z_][\w.]*[A-Za-z_0-9]")


# ---------------------------------------------------------------------------------------------- build context
def _pattern(p: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex over '/'-separated paths."""
    out, i = "", 0
    while i < len(p):
        if p.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif p.startswith("**", i):
            out, i = out + ".*", i + 2
        elif p[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif p[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(p[i]), i + 1
    return re.compile(out)


def _rules(path):
    rules = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            neg = line.startswith("!")
            pat = os.path.normpath(line.lstrip("!").strip()).lstrip("/")
            rules.append((neg, pat, _pattern(pat)))
    return rules


def _excluded(rel: str, rules) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = rel.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    excluded = False
    for neg, _, rx in rules:
        if any(rx.fullmatch(p) for p in prefixes):
            excluded = not neg
    return excluded


def build_context(repo: str):
    """The files (relative paths) ``docker build`` would send from ``repo``."""
    rules = _rules(os.path.join(repo, ".dockerignore"))
    keep = []
    for dirpath, dirnames, filenames in os.walk(repo):
        rel_dir = os.path.relpath(dirpath, repo).replace(os.sep, "/")
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        # prune excluded folders that no '!' pattern reaches into (.git, .venv, runs, ...)
        dirnames[:] = [d for d in dirnames if not _excluded(rel_dir + d, rules)
                       or any(neg and pat.startswith(rel_dir + d + "/") for neg, pat, _ in rules)]
        keep += [rel_dir + f for f in filenames if not _excluded(rel_dir + f, rules)]
    return sorted(keep)


def _dockerfile():
    """The Dockerfile's instructions as (INSTRUCTION, rest) with continuation lines joined."""
    text = open(os.path.join(REPO, "Dockerfile"), encoding="utf-8").read()
    text = re.sub(r"\\\n", " ", text)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerignore_matching():
    rules = [(False, "*", _pattern("*")), (True, "pkg", _pattern("pkg")), (False, "**/__pycache__",
                                                                          _pattern("**/__pycache__"))]
    assert _excluded(".venv/lib/x.py", rules) and _excluded("runs/a", rules)
    assert not _excluded("pkg/a/b.py", rules) and _excluded("pkg/a/__pycache__/b.pyc", rules)


def test_docker_context_and_installed_layout_import_what_the_spec_names(tmp_path, vertex_spec):
    context = build_context(REPO)
    instructions = _dockerfile()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert froms[-1].split()[0] == "python:3.10-slim"  # the image itself (earlier stages only lend files)
    runs = [rest for word, rest in instructions if word == "RUN"]
    assert any("pip install -r requirements.lock" in r for r in runs)
    assert any("pip install --no-deps" in r and r.split("&&")[0].strip().endswith(" .") for r in runs)
    copies = [rest.split() for word, rest in instructions if word == "COPY" and not rest.startswith("--from")]
    assert copies and copies[0][0] == "requirements.lock"  # the locked set installs first (its own layer)
    copied = set()
    for args in copies:
        for src in args[:-1]:
            src = src.rstrip("/")
            assert src in context or any(f.startswith(src + "/") for f in context), f"COPY {src}: not in the context"
            copied.add(src)
    assert {"requirements.lock", "setup.py", "README.md", "synthseg_tf", "pipeline", "components"} <= copied
    assert not [f for f in context if f.startswith((".venv/", "runs/", ".git/", "tests/")) or "__pycache__" in f]
    lock = open(os.path.join(REPO, "requirements.lock"), encoding="utf-8").read()
    for pin in ("tfx==1.15.1", "tensorflow==2.15.1", "apache-beam==2.74.0", "kfp-pipeline-spec=="):
        assert re.search(rf"^{re.escape(pin)}", lock, re.M), pin
    assert not re.search(r"^(-e|\.|file:)", lock, re.M)  # nothing outside the registry

    # install the context as `pip install .` in the image lays it out
    ctx = tmp_path / "context"
    for f in context:
        os.makedirs(ctx / os.path.dirname(f), exist_ok=True)
        shutil.copy2(os.path.join(REPO, f), ctx / f)
    site = tmp_path / "site-packages"
    subprocess.run([sys.executable, "setup.py", "-q", "build_py", "--build-lib", str(site)], cwd=ctx, check=True,
                   capture_output=True, timeout=300)
    assert sorted(os.listdir(site)) == ["synthseg_tf", "synthseg_tf_tfx"]  # no top-level pipeline/components
    assert sorted(os.listdir(site / "synthseg_tf_tfx")) == ["components", "pipeline"]
    assert (site / "synthseg_tf_tfx" / "pipeline" / "module_file.py").is_file()

    # + the GanTrainer's user module (in the spec compiled without --generator)
    names = sorted(set(OWN_NAME.findall(vertex_spec.read_text())) | {"synthseg_tf_tfx.pipeline.gan_module_file.run_fn"})
    assert "synthseg_tf_tfx.pipeline.module_file.preprocessing_fn" in names
    assert "synthseg_tf_tfx.components.synthetic_generation.Executor" in names
    spec = json.loads(vertex_spec.read_text())["pipelineSpec"]
    commands = {tuple(e["container"]["command"]) for e in spec["deploymentSpec"]["executors"].values()
                if "container" in e}
    assert commands == {("python", "-m", RUN_EXECUTOR)}

    # a fresh interpreter that sees only the installed layout (+ the dependencies' site-packages)
    script = r"""
import importlib, importlib.util, json, os, sys
site, names, entry = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in repr(f)]
sys.path[:] = [site] + [p for p in sys.path if p and "__editable__" not in p]
importlib.invalidate_caches()
assert importlib.util.find_spec("pipeline") is None and importlib.util.find_spec("components") is None
found = {}
for name in names:
    try:
        obj = importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name != name:
            raise
        mod, _, attr = name.rpartition(".")
        obj = getattr(importlib.import_module(mod), attr)
    module = sys.modules[getattr(obj, "__module__", None) or obj.__name__]
    found[name] = os.path.relpath(module.__file__, site)
assert importlib.util.find_spec(entry) is not None
print(json.dumps(found))
"""
    res = subprocess.run([sys.executable, "-I", "-c", script, str(site), json.dumps(names), RUN_EXECUTOR],
                         cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    found = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(found) == set(names)
    assert all(not path.startswith("..") for path in found.values()), found  # all from the installed layout
    assert found["synthseg_tf_tfx.pipeline.module_file.run_fn"] == os.path.join(
        "synthseg_tf_tfx", "pipeline", "module_file.py")


# ---------------------------------------------------------------------------------------------- compile
def _compile(out, *extra):
    from synthseg_tf.cli import main

    return main(["pipeline", "compile", "--target", "vertex", "--project", PROJECT, "--region", REGION,
                 "--image", IMAGE, "--pipeline-root", ROOT, "--class-names", ",".join(NAMES), "--preset", "small",
                 "--image-size", "64x64", "--train-steps", "50", "--output", str(out), *extra])


@pytest.fixture(scope="module")
def vertex_spec(tmp_path_factory):
    """``synthseg pipeline compile --target vertex --dataflow`` with every connection attempt failing."""
    pytest.importorskip("tfx")

    def no_network(*args, **kwargs):
        raise OSError("network access during compile")

    out = tmp_path_factory.mktemp("vertex") / "pipeline.json"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", no_network)
        mp.setattr(socket, "create_connection", no_network)
        mp.setattr(socket, "getaddrinfo", no_network)
        rc = _compile(out, "--dataflow", "--generator", "gs://bucket/gan_run", "--synthetic-n", "100")
    assert rc == 0 and out.is_file()
    return out


def test_compile_for_vertex(vertex_spec, tmp_path, capsys):
    job = json.loads(vertex_spec.read_text())
    spec = job["pipelineSpec"]
    tasks = set(spec["root"]["dag"]["tasks"])
    for node in COMPONENTS + ["generator_importer", "SyntheticGeneration", "RealTransform", "BaselineTrainer"]:
        assert node in tasks, sorted(tasks)
    assert "GanTrainer" not in tasks  # the generator is imported
    assert not any(t.startswith("latest_blessed_model_resolver") for t in tasks)  # the baseline is BaselineTrainer's
    evaluator = spec["root"]["dag"]["tasks"]["Evaluator"]["inputs"]["artifacts"]
    assert evaluator["baseline_model"]["taskOutputArtifact"]["producerTask"] == "BaselineTrainer"

    executors = spec["deploymentSpec"]["executors"]
    containers = {k: e["container"] for k, e in executors.items() if "container" in e}
    assert {f"{c}_executor" for c in COMPONENTS} <= set(containers)
    assert all(c["image"] == IMAGE for c in containers.values())

    # Dataflow: the Beam components (and ImportExampleGen's driver) get the runner, project, region, temp location
    dataflow = ["--runner=DataflowRunner", f"--project={PROJECT}", f"--region={REGION}",
                f"--temp_location={ROOT}/tmp", f"--sdk_container_image={IMAGE}"]
    for name in ("ImportExampleGen", "StatisticsGen", "Transform", "Evaluator"):
        args = containers[f"{name}_executor"]["args"]
        assert all(a in args for a in dataflow), (name, args)
    driver = containers["ImportExampleGen_executor"]["lifecycle"]["preCacheCheck"]["args"]
    assert all(a in driver for a in dataflow)
    gen = containers["SyntheticGeneration_executor"]["args"]
    assert gen[gen.index("--executor_class_path") + 1] == "synthseg_tf_tfx.components.synthetic_generation.Executor"
    assert all(a in gen for a in dataflow) and "--runner=DirectRunner" not in gen  # generation on Dataflow too

    # runtime parameter: the data root, with its default in the runtime config
    assert spec["root"]["inputDefinitions"]["parameters"]["data_root"]["type"] == "STRING"
    assert spec["root"]["dag"]["tasks"]["ImportExampleGen"]["inputs"]["parameters"]["input_base"] == {
        "componentInputParameter": "data_root"}
    assert job["runtimeConfig"]["parameters"]["data_root"] == {"stringValue": f"{ROOT}/data"}
    assert job["runtimeConfig"]["gcsOutputDirectory"] == ROOT

    # the user module by its installed name only; sizes and steps from the preset and the overrides
    text = vertex_spec.read_text()
    assert "synthseg_tf_tfx.pipeline.module_file.preprocessing_fn" in text
    assert "synthseg_tf_tfx.pipeline.module_file.run_fn" in text
    assert not re.search(r"(?<![\w.])(pipeline\.module_file|components\.synthetic_generation)", text)
    trainer = spec["root"]["dag"]["tasks"]["Trainer"]["inputs"]["parameters"]
    assert json.loads(trainer["train_args"]["runtimeValue"]["constantValue"]["stringValue"])["num_steps"] == 50
    assert trainer["run_fn"]["runtimeValue"]["constantValue"]["stringValue"] == (
        "synthseg_tf_tfx.pipeline.module_file.run_fn")
    assert '\\"image_size\\": [64, 64]' in text and '\\"sign\\"' in text

    # without --dataflow: no Dataflow args anywhere; without --generator the GanTrainer trains the GAN
    plain = tmp_path / "plain.json"
    assert _compile(plain, "--gan-steps", "7") == 0
    assert "DataflowRunner" not in plain.read_text()
    plain_spec = json.loads(plain.read_text())["pipelineSpec"]
    plain_tasks = plain_spec["root"]["dag"]["tasks"]
    for node in COMPONENTS + ["RealTransform", "GanTrainer", "SyntheticGeneration", "BaselineTrainer"]:
        assert node in plain_tasks, sorted(plain_tasks)
    assert "generator_importer" not in plain_tasks
    gan = plain_tasks["GanTrainer"]["inputs"]
    assert gan["parameters"]["run_fn"]["runtimeValue"]["constantValue"]["stringValue"] == (
        "synthseg_tf_tfx.pipeline.gan_module_file.run_fn")
    assert json.loads(gan["parameters"]["train_args"]["runtimeValue"]["constantValue"]["stringValue"])[
        "num_steps"] == 7
    assert gan["artifacts"]["examples"]["taskOutputArtifact"]["producerTask"] == "RealTransform"
    assert plain_tasks["SyntheticGeneration"]["inputs"]["artifacts"]["generator"]["taskOutputArtifact"] == {
        "producerTask": "GanTrainer", "outputArtifactKey": "model"}
    # --no-train-gan: no synthetic data, no baseline Trainer; the latest blessed model is the baseline
    real_only = tmp_path / "real_only.json"
    assert _compile(real_only, "--no-train-gan") == 0
    text = real_only.read_text()
    assert "SyntheticGeneration" not in text and "GanTrainer" not in text and "BaselineTrainer" not in text
    assert "latest_blessed_model_resolver" in text
    assert "wrote " in capsys.readouterr().out


def test_compile_errors_are_one_line_exit_2(tmp_path, capsys):
    out = tmp_path / "x.json"
    assert _compile(out, "--task", "classification", "--min-mean-iou", "0.5") == 2  # a segmentation option
    assert _compile(out, "--name", "Not_Valid") == 2
    from synthseg_tf.cli import main

    assert main(["pipeline", "compile", "--target", "vertex", "--image", IMAGE, "--pipeline-root", "/local/dir",
                 "--class-names", "a,b", "--output", str(out)]) == 2
    assert main(["pipeline", "compile", "--target", "vertex", "--image", IMAGE, "--pipeline-root", ROOT,
                 "--project", "", "--class-names", "a,b", "--dataflow", "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert "is an option of --task segmentation" in err and "gs://" in err and "--dataflow needs --project" in err
    assert all(line.startswith("synthseg: error: ") for line in err.strip().splitlines())
    assert not out.exists()


def test_library_and_cli_parser_do_not_import_tfx():
    code = ("import sys, synthseg_tf, synthseg_tf.cli as c; c.build_parser(); "
            "assert not [m for m in sys.modules if m.split('.')[0] in ('tfx', 'tensorflow')], 'imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_run_input_errors_exit_before_tfx_loads(tmp_path):
    out = tmp_path / "out"
    cls = tmp_path / "cls_tfr"  # a TFRecord folder of a classification dataset
    cls.mkdir()
    (cls / "data-00000-of-00001.tfrecord").write_bytes(b"")
    (cls / "dataset.json").write_text(json.dumps({"task": "classification", "spec": "demo-classes"}))
    taken = out / "data"  # out/data already holds another dataset's records
    taken.mkdir(parents=True)
    (taken / "data-00000-of-00001.tfrecord").write_bytes(b"")
    (taken / "dataset.json").write_text(json.dumps({"task": "segmentation", "spec": "camvid:/elsewhere"}))
    runs = [["--data", "demo-scenes?n=4&size=32", "--task", "classification"], ["--data", str(cls)],
            ["--data", "demo-scenes?n=4&size=32"]]
    code = ("import json, sys\nfrom synthseg_tf.cli import main\n"
            "codes = [main(['pipeline', 'run', '--out', sys.argv[1]] + a) for a in json.loads(sys.argv[2])]\n"
            "print(json.dumps({'codes': codes, 'tfx': 'tfx' in sys.modules}))\n")
    res = subprocess.run([sys.executable, "-c", code, str(out), json.dumps(runs)], capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert json.loads(res.stdout.strip().splitlines()[-1]) == {"codes": [2, 2, 3], "tfx": False}
    err = [line for line in res.stderr.strip().splitlines() if line.startswith("synthseg: error: ")]
    assert len(err) == 3
    assert "is a segmentation dataset" in err[0] and "--task classification pipeline" in err[0]
    assert "classification records" in err[1] and "use --task classification" in err[1]
    assert "camvid:/elsewhere" in err[2]
