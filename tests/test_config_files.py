"""User config files (issue 10): a base preset + overrides in TOML, read wherever a preset is."""

from __future__ import annotations

import json

import pytest

from pgolf.config.run import apply_overrides
from pgolf.errors import ConfigError
from pgolf.tools.cli import main
from pgolf.tools.config_files import differences, resolve, write_config_file
from pgolf.tools.presets import get_preset


def test_a_written_file_reads_back_as_the_same_config(tmp_path):
    cfg = apply_overrides(get_preset("baseline-cpu"), {
        "model.num_layers": "4", "model.mlp_activation": "swiglu", "train.seq_len": "256",
        "optim.warmdown_frac": "0.2", "quant.gptq": "true", "pack.compressor": "auto", "eval.tilt": "true",
    })  # fmt: skip
    path = tmp_path / "mine.toml"
    diff = write_config_file(cfg, path, "baseline-cpu", comment="my idea\nsecond line")
    assert len(diff) == 7
    text = path.read_text()
    assert (
        text.startswith('# my idea\n# second line\npreset = "baseline-cpu"\n')
        and "[quant]\ngptq = true" in text
    )
    back = resolve(str(path))
    assert back.preset == "mine" and not differences(back, cfg)
    with pytest.raises(ConfigError, match="its own base"):
        write_config_file(back, path, str(path))


def test_a_file_can_build_on_another_file_relative_to_itself(tmp_path):
    (tmp_path / "configs").mkdir()
    base = tmp_path / "configs" / "base.toml"
    base.write_text('preset = "debug"\n[model]\nnum_layers = 3\n')
    child = tmp_path / "configs" / "child.toml"
    child.write_text('preset = "base.toml"\n[train]\nseed = 7\n')
    cfg = resolve(str(child))
    assert cfg.model.num_layers == 3 and cfg.train.seed == 7
    # written from elsewhere, the base is still named relative to the new file
    write_config_file(apply_overrides(cfg, {"train.seed": "8"}), tmp_path / "grand.toml", str(child))
    assert 'preset = "configs/child.toml"' in (tmp_path / "grand.toml").read_text()
    assert resolve(str(tmp_path / "grand.toml")).train.seed == 8


@pytest.mark.parametrize(("text", "message"), [
    ("[model]\nnum_layers = 3\n", "needs a top-level `preset"),
    ('preset = "debug"\n[modle]\nnum_layers = 3\n', "unknown section [modle]"),
    ('preset = "debug"\n[model]\nnum_layer = 3\n', "did you mean model.num_layers"),
    ('preset = "debug"\n[model]\nnum_layers = "three"\n', "expected int, got 'three'"),
    ('preset = "debug"\n[model]\nnum_layers = 2.5\n', "expected int, got '2.5'"),
    ('preset = "debug"\n[model]\nnum_layers = [3]\n', "must be a single value"),
    ('preset = "debug"\n[model\n', "not valid TOML"),
    ('preset = "nope"\n', "unknown preset"),
    ('preset = "self.toml"\n', "nest more than"),
])  # fmt: skip
def test_bad_files_name_the_file_and_the_problem(tmp_path, text, message):
    path = tmp_path / "self.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as err:
        resolve(str(path))
    assert message in str(err.value)
    assert "self.toml" in str(err.value) or message == "unknown preset"


def test_train_and_config_show_take_a_config_file(tmp_path, capsys, data_root):
    path = tmp_path / "tiny.toml"
    path.write_text(f'preset = "debug"\n[data]\nroot = "{data_root}"\n[train]\niterations = 3\n')
    assert main(["config", "show", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["train"]["iterations"] == 3
    out = tmp_path / "run"
    assert main(["train", "--config", str(path), "--out", str(out), "--train.seed", "5"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["preset"] == "tiny" and result["steps"] == 3
    assert (
        main(["config", "show", "debug", "--model.num_layers", "3", "--save", str(tmp_path / "s.toml")]) == 0
    )
    assert resolve(str(tmp_path / "s.toml")).model.num_layers == 3
