"""Config values are coerced to their declared types (YAML reads ``1e-3`` as a string), with one-line errors."""

from __future__ import annotations

import pytest

from beatrec.align.config import AlignConfig
from beatrec.cli import main
from beatrec.config import coerce, load_yaml
from beatrec.errors import ConfigError


def test_scalars_are_coerced_to_the_declared_type() -> None:
    c = load_yaml(AlignConfig, None, ["train.lr=1e-3", "train.epochs=2.0", "train.select_best=true",
                                      "model.lora_targets=q_proj", "lm.name=123", "train.weight_decay=0"])
    assert c.train.lr == 0.001 and isinstance(c.train.lr, float)
    assert c.train.epochs == 2 and isinstance(c.train.epochs, int)
    assert c.train.select_best is True and c.model.lora_targets == ("q_proj",) and c.lm.name == "123"
    assert isinstance(c.train.weight_decay, float)
    assert coerce("5", int, "k") == 5 and coerce("off", bool, "k") is False and coerce(None, int, "k") is None


@pytest.mark.parametrize(("setting", "message"), [
    ("train.epochs=abc", "train.epochs='abc': expected int"),
    ("train.epochs=1.5", "train.epochs=1.5: expected int"),
    ("train.select_best=maybe", "train.select_best='maybe': expected bool"),
    ("train.lr=fast", "train.lr='fast': expected float"),
    ("train.lr=true", "train.lr=True: expected float"),
    ("lm.name=[a, b]", "lm.name=['a', 'b']: expected str"),
])
def test_wrong_types_name_key_value_and_type(setting: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_yaml(AlignConfig, None, [setting])


def test_cli_reports_a_wrong_type_in_one_line(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    assert main(["tokenize", "--data", str(tmp_path), "--out", str(tmp_path / "o"), "--set", "train.lr=abc"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "train.lr='abc': expected float" in err
