from pathlib import Path

import pytest

from recmind_dist.errors import InputError
from recmind_dist.specs import load_spec

ROOT = Path(__file__).resolve().parents[1]
HEAD_DATA = "data: {source: ml-100k}\n"  # every spec file names its data and model
HEAD = HEAD_DATA + "model: {name: lightgcn}\n"


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.yaml")))
def test_shipped_configs_validate(name):
    spec = load_spec(ROOT / "configs" / name)
    assert spec.name


def test_unknown_key_is_named(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text(HEAD_DATA + "model:\n  name: lightgcn\n  dimm: 3\n")
    with pytest.raises(InputError) as e:
        load_spec(p)
    assert "x.yaml" in str(e.value) and "model.lightgcn.dimm" in str(e.value)
    assert "unknown key" in str(e.value)


def test_wrong_type_is_named(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text(HEAD + "train:\n  lr: fast\n")
    with pytest.raises(InputError, match=r"train\.lr"):
        load_spec(p)


def test_malformed_yaml_names_file_and_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text(HEAD + "train:\n  lr: [1, 2\n")
    with pytest.raises(InputError, match=r"bad\.yaml.*malformed YAML.*line"):
        load_spec(p)


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_spec(tmp_path / "nope.yaml")


def test_overrides_are_validated(tmp_path):
    p = ROOT / "configs" / "ml100k_lightgcn.yaml"
    spec = load_spec(p, ["seed=7", "train.lr=0.01", "eval.ks=[10,20]"])
    assert spec.seed == 7 and spec.train.lr == 0.01 and spec.eval.ks == [10, 20]
    with pytest.raises(InputError, match="train.nope"):
        load_spec(p, ["train.nope=1"])
    with pytest.raises(InputError, match="key.path=value"):
        load_spec(p, ["seed"])


def test_ratios_must_sum_to_one(tmp_path):
    p = tmp_path / "x.yaml"
    p.write_text(HEAD + "split:\n  ratios: [0.5, 0.1, 0.1]\n")
    with pytest.raises(InputError, match="split"):
        load_spec(p)
