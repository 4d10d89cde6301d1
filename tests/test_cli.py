import json
from pathlib import Path

import pytest

from pgolf.tools.cli import build_parser, main


def test_config_show_and_list(capsys):
    assert main(["config", "show", "baseline", "--model.num_layers", "11"]) == 0
    out = capsys.readouterr().out
    assert "model.num_layers: 11" in out and "train.batch_tokens: 524288" in out
    assert main(["config", "show", "baseline-cpu"]) == 0
    out = capsys.readouterr().out
    assert "parameters             1,641,740" in out and "artifact upper bound" in out
    assert "cap 2,000,000" in out
    assert "int8-contest     1,638,400 params  tok_emb.weight, blocks.*.attn.c_q.weight" in out  # the policy
    assert main(["config", "show", "pr162"]) == 0
    assert "int6            21,233,664 params  blocks.*.attn.c_q.weight" in capsys.readouterr().out
    assert main(["config", "show", "baseline-cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["track"] == "cpu-5min-2mb"
    assert main(["config", "list"]) == 0
    listing = capsys.readouterr().out
    assert "baseline " in listing and "17,059,912" in listing and "baseline-cpu" in listing


def test_help_lists_every_override_with_its_doc(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    out = capsys.readouterr().out
    assert "--model.num_layers" in out and "Transformer blocks" in out and "--optim.warmdown_frac" in out


def test_errors_exit_2_with_a_message(capsys, tmp_path):
    assert main(["config", "show", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err
    assert main(["config", "show", "baseline", "--model.num_heads", "7"]) == 2
    assert "must divide model.model_dim" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "missing.pgolf")]) == 2
    assert "artifact not found" in capsys.readouterr().err
    assert (
        main(
            [
                "data",
                "build",
                "--input",
                str(tmp_path / "x.txt"),
                "--vocab",
                "300",
                "--out",
                str(tmp_path),
                "--val-docs",
                "1",
            ]
        )
        == 2
    )
    assert "input not found" in capsys.readouterr().err


def test_a_run_without_its_data_says_which_command_builds_it_before_anything_starts(capsys, tmp_path):
    """A newcomer who built the 1,024-piece demo data and records cpu-best (2,048 pieces) is told the
    command, and no record folder is left holding the --name."""
    empty = str(tmp_path / "data")
    assert main(["train", "--preset", "cpu-best", "--data.root", empty, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "pgolf_demo_sp2048 is not here: build it with `pgolf data demo --vocab 2048 --out " in err
    assert not (tmp_path / "run").exists()
    args = ["record", "--preset", "cpu-best", "--seeds", "1,2,3", "--name", "mine"]
    args += ["--root", str(tmp_path / "rec")]
    assert main([*args, "--data.root", empty]) == 2
    assert "pgolf data demo --vocab 2048" in capsys.readouterr().err and not (tmp_path / "rec").exists()
    other = ["--data.root", empty, "--data.dataset", "datasets/mine_sp1024"]
    assert main(["train", "--preset", "baseline-cpu", *other, "--out", str(tmp_path / "run")]) == 2
    assert "mine_sp1024 is not here: build it (pgolf data build or fineweb" in capsys.readouterr().err


def test_data_build_train_eval(tmp_path, capsys, data_root, monkeypatch):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(
        "".join(
            json.dumps({"text": f"Line {i} of a tiny corpus, number {i * 7}."}) + "\n" for i in range(300)
        )
    )
    assert (
        main(
            [
                "data",
                "build",
                "--input",
                str(docs),
                "--vocab",
                "300",
                "--out",
                str(tmp_path / "d"),
                "--name",
                "tiny",
                "--val-docs",
                "20",
            ]
        )
        == 0
    )
    assert "datasets/tiny_sp300" in capsys.readouterr().out

    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--preset",
                "debug",
                "--out",
                str(out),
                "--data.root",
                str(data_root),
                "--train.iterations",
                "5",
            ]
        )
        == 0
    )
    summary = capsys.readouterr().out
    assert "val_bpb int8_zlib round trip" in summary and "on track (bytes: no cap)" in summary

    assert main(["eval", str(out / "artifact.pgolf"), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    trained = json.loads((out / "result.json").read_text())
    assert r["val_bpb"] == trained["val_bpb"] and r["official_score"] is True
    assert r["val_tokens"] == trained["val_tokens"] and r["bytes_total"] == trained["bytes_total"]
    assert r["code_sha256"] == trained["code_sha256"] and r["code_changed_since_training"] is False

    # other data scores, but never under the official label
    assert main(["eval", str(out / "artifact.pgolf"), "--data.val_pattern", "fineweb_train_*.bin"]) == 0
    text = capsys.readouterr().out
    assert "unofficial_int8_zlib_eval" in text and "validation tokens differ" in text and "final_" not in text
    assert main(["eval", str(out / "artifact.pgolf"), "--eval.seq_len", "32"]) == 0
    assert "eval.seq_len 32 differs from the artifact's 64" in capsys.readouterr().out

    # counted code changed since training: the recorded bytes are reported, with a warning
    import pgolf.eval.artifact

    monkeypatch.setattr(pgolf.eval.artifact, "sources_sha256", lambda plugins=(): "0" * 64)
    assert main(["eval", str(out / "artifact.pgolf")]) == 0
    captured = capsys.readouterr()
    assert "installed counted code differs" in captured.err
    assert f"bytes_code:{trained['bytes_code']} (recorded at training)" in captured.out
    monkeypatch.undo()

    # the tokenizer must be the one the artifact was trained with
    other = tmp_path / "d" / "tokenizers" / "tiny_300_bpe.model"
    assert main(["eval", str(out / "artifact.pgolf"), "--data.tokenizer", str(other)]) == 2
    assert "is not the tokenizer" in capsys.readouterr().err


def test_off_track_exits_1_with_the_reasons(tmp_path, capsys, data_root):
    # ~4.2M parameters kept in fp16 (no int8): far over 2 MB whatever zlib does
    wide = ["--model.model_dim", "512", "--model.num_heads", "8", "--model.num_kv_heads", "4",
            "--quant.keep_float_max_numel", "100000000"]  # fmt: skip
    args = ["train", "--preset", "debug", "--out", str(tmp_path), "--data.root", str(data_root), *wide,
            "--track", "cpu-5min-2mb", "--train.iterations", "1"]  # fmt: skip
    assert main(args) == 2  # judged before the first step: refused, with both reasons
    err = capsys.readouterr().err
    assert "cannot be on its track" in err and "projected: artifact + code is" in err
    assert main([*args, "--off-track"]) == 1
    err = capsys.readouterr().err
    assert (
        "off track: artifact + code is" in err and "over the cpu-5min-2mb track's 2,000,000 byte cap" in err
    )
    assert "off track: train.max_wallclock_seconds=0 is not within" in err  # uncapped on a capped track
    assert (tmp_path / "artifact.pgolf").exists()  # nothing is lost: the artifact and log stay
    assert main(["eval", str(tmp_path / "artifact.pgolf")]) == 1
    assert "over the cpu-5min-2mb track's 2,000,000 byte cap" in capsys.readouterr().err


def test_pack_inspect_and_fit(tmp_path, capsys, data_root, monkeypatch):
    out = tmp_path / "run"
    assert main(["train", "--preset", "debug", "--out", str(out), "--data.root", str(data_root),
                 "--train.iterations", "5"]) == 0  # fmt: skip
    trained = json.loads((out / "result.json").read_text())
    capsys.readouterr()

    # re-packing under the run's own policy reproduces its artifact and score exactly
    assert main(["pack", str(out), "--out", str(tmp_path / "same.pgolf"), "--json"]) == 0
    same = json.loads(capsys.readouterr().out)
    assert same["val_bpb"] == trained["val_bpb"] and same["bytes_model"] == trained["bytes_model"]
    assert (tmp_path / "same.pgolf").read_bytes() == (out / "artifact.pgolf").read_bytes()

    args = ["pack", str(out), "--quant.matrix", "int5", "--quant.embed", "int6",
            "--quant.keep_float_max_numel", "0", "--pack.compressor", "auto", "--json"]  # fmt: skip
    assert main(args) == 0
    small = json.loads(capsys.readouterr().out)
    assert small["bytes_model"] < same["bytes_model"] and small["bits_per_param"] < same["bits_per_param"]
    assert (
        small["pre_quant_val_bpb"] == trained["pre_quant_val_bpb"] and small["val_bpb"] != trained["val_bpb"]
    )

    assert main(["inspect", small["artifact"], "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    formats = {t["name"]: t["format"] for t in report["tensors"]}
    assert formats["tok_emb.weight"] == "int6" and formats["blocks.0.mlp.fc.weight"] == "int5"
    assert formats["blocks.0.attn_scale"] == "int8-contest"  # vectors past the threshold: per tensor
    assert sum(t["params"] for t in report["tensors"]) == small["params"]
    # the file is exactly: magic, version, digest, section count, and each section's header and bytes
    table = sum(3 + len(x["section"]) + len(x["codec"]) + len(x["transform"]) + 17 + x["stored_bytes"]
                for x in report["sections"])  # fmt: skip
    assert 8 + 2 + 32 + 4 + table == Path(small["artifact"]).stat().st_size

    fit_args = [
        "pack",
        str(out),
        "--fit",
        "--json",
        "--quant.keep_float_max_numel",
        "1000",
    ]  # quantise matrices
    assert main(fit_args) == 0
    fit = json.loads(capsys.readouterr().out)
    assert fit["estimate"].startswith("sizes are estimates: round-to-nearest")
    sizes = [row["bytes_model"] for row in fit["ladder"]]
    # matrix steps shrink the artifact; the last (pgolf's int8 embedding grid) can grow a barely trained
    # embedding whose rows sit far below int8-contest's 1/127 floor: every step is measured, not assumed
    assert len(sizes) == 7 and sizes[:6] == sorted(sizes[:6], reverse=True) and sizes[5] < 0.8 * sizes[0]
    # under a cap between two steps, the first step below it is named (cumulative steps)
    import pgolf.tools.packtool as packtool
    from pgolf.tracks import Track

    cap = (fit["ladder"][3]["bytes_total"] + fit["ladder"][4]["bytes_total"]) // 2
    capped = Track(name="t", hardware="x", train_seconds=1.0, eval_seconds=1.0, artifact_cap_bytes=cap)
    monkeypatch.setattr(packtool, "get_track", lambda name: capped)
    assert main(fit_args) == 0
    assert json.loads(capsys.readouterr().out)["first_fit"] == "+ SDClip k=20"
    assert main(fit_args[:-3] + fit_args[-2:]) == 0  # as text, each size marked as the estimate it is
    text = capsys.readouterr().out
    assert (
        text.startswith("sizes are estimates")
        and "(estimated)" in text
        and "first policy estimated to fit" in text
    )
    monkeypatch.undo()

    # with GPTQ, the calibration runs through the training path but prints nothing: stdout stays JSON
    assert (
        main(["pack", str(out), "--quant.gptq", "true", "--quant.gptq_batches", "2", "--no-score", "--json"])
        == 0
    )
    assert json.loads(capsys.readouterr().out)["calibration_seconds"] > 0

    assert main(["pack", str(out), "--quant.qat", "true"]) == 2
    assert "re-packing changes only export-time" in capsys.readouterr().err
    assert main(["pack", str(tmp_path / "nowhere")]) == 2
    assert "weights.pgolf: not found; re-packing needs the float weights" in capsys.readouterr().err


def test_a_misspelled_override_names_the_nearest_key(capsys):
    for typo in ("--model.num_layres", "--model.num_layer"):  # a prefix is no longer taken for the key
        with pytest.raises(SystemExit) as e:
            main(["train", "--preset", "debug", typo, "3"])
        assert e.value.code == 2
        assert "did you mean --model.num_layers?" in capsys.readouterr().err
