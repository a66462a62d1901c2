"""Plugin discovery: drop-in files, BIOSEG_PLUGIN_PATH, entry points, and broken plugins."""

from __future__ import annotations

import re
import shutil
import textwrap
import tomllib
from pathlib import Path

import pytest

from tests.conftest import REPO
from zoo._registry import BUILTIN_PLUGINS, ENTRY_POINT_GROUP

BUILTINS = ["fcn8s", "fcn16s", "fcn32s", "vgg16_fcn", "vgg16_fcn_report", "timm/resnet34"]
LIST = "import zoo; print(zoo.list_models())"
ORIGIN = "import zoo; print(zoo.get_spec({name!r}).origin)"


def readme_plugin() -> str:
    """The example plugin in docs/models.md's 'Add a backbone in one file' section, verbatim."""
    readme = (REPO / "docs" / "models.md").read_text()
    section = readme.split("## Add a backbone in one file", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.fixture
def zoo_copy(tmp_path: Path) -> Path:
    """A temporary copy of the package, so tests never write into the checkout."""
    shutil.copytree(REPO / "zoo", tmp_path / "zoo", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def write(folder: Path, name: str, code: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(code))
    return path


def test_readme_plugin_dropped_into_zoo_works_without_reinstall(zoo_copy: Path, run_python):
    plugin = readme_plugin()
    assert len(plugin.strip().splitlines()) <= 30
    path = write(zoo_copy / "zoo", "deeplab_mobilenet.py", plugin)
    out = run_python(
        "import zoo, torch\n"
        "print(zoo.list_models())\n"
        "print(zoo.get_spec('deeplabv3_mobilenet').origin)\n"
        "m = zoo.create_model('deeplabv3_mobilenet', num_classes=2, in_channels=1)\n"
        "print(tuple(m(torch.randn(2, 1, 67, 45)).shape))\n",
        cwd=zoo_copy,
        env={"PYTHONPATH": str(zoo_copy), "BIOSEG_DISABLE_PLUGIN_AUTOLOAD": "1"},
    ).stdout.splitlines()
    assert "deeplabv3_mobilenet" in out[0] and all(name in out[0] for name in BUILTINS)
    assert out[1] == f"drop-in {path}"
    assert out[2] == "(2, 2, 67, 45)"


def test_plugin_path_folder_is_searched(tmp_path: Path, run_python) -> None:
    write(tmp_path / "plugins", "deeplab_mobilenet.py", readme_plugin())
    out = run_python(
        ORIGIN.format(name="deeplabv3_mobilenet"),
        env={"BIOSEG_PLUGIN_PATH": str(tmp_path / "plugins")},
    ).stdout
    assert out.strip() == f"drop-in {tmp_path / 'plugins' / 'deeplab_mobilenet.py'}"


TINY_PLUGIN = """
    from torch import nn
    from zoo import register_model

    @register_model("tiny_ep", summary="one conv", family="test")
    def build(*, num_classes, in_channels, pretrained):
        return nn.Conv2d(in_channels, num_classes, 3, padding=1)
"""


def fake_distribution(site: Path, entry_points: str) -> None:
    """A real installed distribution as importlib.metadata sees it: a dist-info folder."""
    info = site / "tinydist-1.2.3.dist-info"
    write(info, "METADATA", "Metadata-Version: 2.1\nName: tinydist\nVersion: 1.2.3\n")
    write(info, "entry_points.txt", f"[{ENTRY_POINT_GROUP}]\n{entry_points}\n")


@pytest.mark.slow  # fresh interpreters or processes: CI's -m slow
def test_entry_point_of_an_installed_distribution_is_loaded(tmp_path: Path, run_python) -> None:
    site = tmp_path / "site"
    write(site, "tiny_models.py", TINY_PLUGIN)
    fake_distribution(site, "tiny = tiny_models")
    code = LIST + "\n" + ORIGIN.format(name="tiny_ep")
    out = run_python(code, env={"PYTHONPATH": str(site)}).stdout.splitlines()
    assert "tiny_ep" in out[0]
    assert out[1] == "entry point tinydist 1.2.3"
    off = {"PYTHONPATH": str(site), "BIOSEG_DISABLE_PLUGIN_AUTOLOAD": "1"}
    disabled = run_python(LIST, env=off)
    assert "tiny_ep" not in disabled.stdout and "fcn8s" in disabled.stdout


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("raise ImportError('needs a package that is not installed')", "ImportError: needs a"),
        ("def broken(:\n", "SyntaxError"),
        (
            "from torch import nn\nfrom zoo import register_model\n"
            "register_model('half_done', summary='x')(lambda **kw: nn.Identity())\n"
            "1 / 0\n",
            "ZeroDivisionError",
        ),
    ],
)
def test_broken_plugin_is_reported_by_file_and_isolated(
    zoo_copy: Path, run_python, code: str, message: str
) -> None:
    path = write(zoo_copy / "zoo", "broken.py", code)
    result = run_python(LIST, cwd=zoo_copy, env={"PYTHONPATH": str(zoo_copy)})
    assert f"plugin {path} failed to load" in result.stderr
    assert message in result.stderr
    assert all(name in result.stdout for name in BUILTINS)
    assert "half_done" not in result.stdout  # what a failed plugin registered is rolled back


def test_taken_name_is_refused_with_a_warning_naming_both(zoo_copy: Path, run_python) -> None:
    write(zoo_copy / "zoo", "impostor.py", TINY_PLUGIN.replace('"tiny_ep"', '"fcn8s"'))
    result = run_python(
        ORIGIN.format(name="fcn8s"), cwd=zoo_copy, env={"PYTHONPATH": str(zoo_copy)}
    )
    assert result.stdout.strip() == "built-in"
    assert "model 'fcn8s' from drop-in" in result.stderr and "impostor.py" in result.stderr
    assert "taken by built-in (zoo.fcn)" in result.stderr


def test_plugin_with_wrong_output_shape_is_caught_on_forward(zoo_copy: Path, run_python) -> None:
    write(zoo_copy / "zoo", "halfsize.py", TINY_PLUGIN.replace("padding=1", "stride=2"))
    result = run_python(
        "import zoo, torch\n"
        "m = zoo.create_model('tiny_ep')\n"
        "try:\n    m(torch.randn(1, 3, 8, 8))\n"
        "except zoo.ModelBuildError as e:\n    print(e)\n",
        cwd=zoo_copy,
        env={"PYTHONPATH": str(zoo_copy)},
    )
    assert "returned (1, 1, 3, 3)" in result.stdout  # (8 - 3) // 2 + 1 with stride 2
    assert "must return logits of shape (1, 1, 8, 8)" in result.stdout


@pytest.mark.slow  # fresh interpreters or processes: CI's -m slow
def test_import_zoo_is_light_until_a_model_is_built(run_python) -> None:
    out = run_python(
        "import sys, zoo\n"
        "print('timm' in sys.modules, 'gradio' in sys.modules)\n"
        "zoo.list_models()\n"
        "print('timm' in sys.modules, 'gradio' in sys.modules)\n"
        "zoo.create_model('timm/resnet18')\n"
        "print('timm' in sys.modules)\n"
    ).stdout.split()
    assert out == ["False", "False", "False", "False", "True"]


def test_builtins_are_declared_as_entry_points_in_pyproject() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    declared = pyproject["project"]["entry-points"][ENTRY_POINT_GROUP]
    assert declared == {name: f"zoo.{name}" for name in BUILTIN_PLUGINS}
    assert all((REPO / "zoo" / f"{name}.py").is_file() for name in BUILTIN_PLUGINS)


def test_specs_describe_origin_normalization_and_sources() -> None:
    import zoo

    description = zoo.get_spec("vgg16_fcn").describe()
    assert description["origin"] == "built-in" and description["family"] == "vgg16_fcn"
    assert description["mean"] == [0.485, 0.456, 0.406]
    assert description["pretrained_sources"] == [  # plain VGG16 and VGG16 with batch norm
        "torchvision:VGG16_Weights.IMAGENET1K_V1",
        "torchvision:VGG16_BN_Weights.IMAGENET1K_V1",
    ]
    assert zoo.get_spec("timm/regnetx_002").name == "timm/regnetx_002"  # any timm name resolves


@pytest.mark.slow  # fresh interpreters or processes: CI's -m slow
def test_runtime_registration_and_pretrained_without_sources(run_python) -> None:
    out = run_python(
        "import zoo\nfrom torch import nn\n"
        "zoo.register_model('runtime_conv', summary='x')(lambda **kw: nn.Identity())\n"
        "print(zoo.get_spec('runtime_conv').origin)\n"
        "try:\n    zoo.create_model('runtime_conv', pretrained=True)\n"
        "except ValueError as e:\n    print(e)\n"
    ).stdout.splitlines()
    assert out[0] == "runtime"
    assert out[1] == "model 'runtime_conv' has no pretrained weights; use pretrained=False"


THREADED_LOOKUP = """
import threading
import zoo

names = ["fcn8s", "unet", "vgg16_fcn", "fcn32s"] * 4
barrier, errors = threading.Barrier(len(names)), []

def look_up(name):
    barrier.wait()  # every thread asks at once, before any plugin has been imported
    try:
        zoo.get_spec(name)
    except Exception as error:
        errors.append(repr(error))

threads = [threading.Thread(target=look_up, args=(name,)) for name in names]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print(errors)
"""


@pytest.mark.slow  # fresh interpreters or processes: CI's -m slow
def test_first_lookups_from_many_threads_all_find_their_model(run_python) -> None:
    for _ in range(3):  # a race: try it more than once
        assert run_python(THREADED_LOOKUP).stdout.strip() == "[]"


@pytest.mark.slow  # fresh interpreters or processes: CI's -m slow
def test_another_top_level_zoo_first_on_the_path_is_named_at_import(tmp_path, run_python):
    (tmp_path / "zoo").mkdir()
    (tmp_path / "zoo" / "__init__.py").write_text("")  # someone else's `zoo`, first on the path
    result = run_python(
        "import trainers", cwd=tmp_path, env={"PYTHONPATH": f"{tmp_path}:{REPO}"}, check=False
    )
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("ImportError: bioseg's trainers need bioseg's own `zoo` package")
    assert str(tmp_path / "zoo" / "__init__.py") in last
    assert run_python("import trainers.data", cwd=REPO).returncode == 0  # a checkout: ours first
