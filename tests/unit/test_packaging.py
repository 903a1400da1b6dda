"""The deployable pieces agree with each other: layer pins with the lock, runtime in one place."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def locked_versions() -> dict[str, str]:
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    return {p["name"]: p["version"] for p in lock["package"] if "version" in p}


def layer_pins() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "layers/common/requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, version = line.split(";")[0].strip().split("==")
            pins[re.sub(r"\[.*\]", "", name).lower()] = version
    return pins


def test_layer_requirements_match_the_lock():
    # Given the lock and the layer's requirements, when compared, then every pin is the locked version
    locked = locked_versions()
    pins = layer_pins()
    assert pins, "layers/common/requirements.txt is empty"
    assert {name: locked.get(name) for name in pins} == pins, "run `make layer-requirements`"


def test_layer_ships_every_runtime_dependency():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {re.split(r"[\[<>=]", dep)[0].lower() for dep in project["dependencies"]}
    assert names <= set(layer_pins())


class _Loader(yaml.SafeLoader):
    pass


_Loader.add_multi_constructor("!", lambda loader, suffix, node: None)


def test_runtime_is_named_once_for_functions_and_matches_the_layer():
    template = yaml.load((ROOT / "template.yaml").read_text(), Loader=_Loader)
    runtime = template["Globals"]["Function"]["Runtime"]
    layer = template["Resources"]["CommonLayer"]
    assert layer["Metadata"]["BuildMethod"] == runtime
    assert layer["Properties"]["CompatibleRuntimes"] == [runtime]
    for name, resource in template["Resources"].items():
        if resource["Type"] == "AWS::Serverless::Function":
            assert "Runtime" not in resource.get("Properties", {}), f"{name} overrides the global runtime"
