"""The dev split (issue 34): carved from the training documents by ``pgolf data build --dev-docs``,
disjoint from train and validation and recorded in the manifest; a run scoring it
(``data.score_split=dev``) reads only dev shards and says dev everywhere; searches score it by default;
``pgolf check`` reports the split a run was scored on and the one its settings were chosen on."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from conftest import tiny_docs as _docs
from pgolf.config.data import DataConfig
from pgolf.data.manifest import check_train_val_disjoint
from pgolf.data.shards import find_shards, read_shard
from pgolf.data.valset import load_validation
from pgolf.errors import ConfigError, DataBuildError, DataError, PgolfError
from pgolf.tools.data.build import build_dataset, doc_hash, split_documents
from pgolf.tools.data.docs import val_docs_in_train
from pgolf.tools.data.splits import search_split


def _data(root: Path, built, **kw) -> DataConfig:
    return DataConfig(root=str(root), dataset=str(built.dataset_dir.relative_to(root)),
                      tokenizer=str(built.tokenizer_path.relative_to(root)), **kw)  # fmt: skip


def test_the_dev_split_is_carved_from_training_documents_and_recorded(dev_data):
    _, built = dev_data
    m, docs = built.manifest, _docs(120)
    assert built.dataset_dir.name == "t_sp300_dev12" and built.tokenizer_path.name == "t_300_dev12_bpe.model"
    assert list(m["splits"]) == ["val", "dev", "train"] and m["dev_docs"] == 12
    assert "never train" in m["dev_selection"]
    # the hash rule's order: validation first, then the next 12 documents are dev, the rest train
    ordered = sorted(docs, key=doc_hash)
    hashes = {k: m["splits"][k]["doc_sha256"] for k in ("val", "dev", "train")}
    want = {"val": ordered[:10], "dev": ordered[10:22], "train": ordered[22:]}
    assert hashes == {k: [doc_hash(d) for d in v] for k, v in want.items()}
    assert not set(hashes["dev"]) & set(hashes["train"]) and not set(hashes["dev"]) & set(hashes["val"])
    dev = m["splits"]["dev"]
    files = find_shards(built.dataset_dir, "fineweb_dev_*.bin")
    assert [s["file"] for s in dev["shards"]] == [f.name for f in files] and len(files) > 1
    assert dev["tokens"] == sum(len(read_shard(f)) for f in files)
    assert all(len(s["sha256"]) == 64 for s in dev["shards"])
    # no dev document in the training tokens, proven on the tokens themselves
    train = find_shards(built.dataset_dir, "fineweb_train_*.bin")
    found = val_docs_in_train(train, files, min_tokens=8)
    assert found.checked == 12 and not found.found


def test_a_build_without_dev_docs_is_the_build_it_was(dev_data, plain_data):
    """No dev split, no dev keys, its own folder: the same validation split, every other document trains."""
    _, built = dev_data
    _, plain = plain_data
    hashes = {k: built.manifest["splits"][k]["doc_sha256"] for k in ("val", "dev", "train")}
    assert plain.dataset_dir.name == "t_sp300" and plain.tokenizer_path.name == "t_300_bpe.model"
    assert "dev" not in plain.manifest["splits"] and "dev_docs" not in plain.manifest
    assert plain.manifest["splits"]["val"]["doc_sha256"] == hashes["val"]
    assert plain.manifest["splits"]["train"]["doc_sha256"] == hashes["dev"] + hashes["train"]


def test_the_tokenizer_never_sees_a_dev_document(tmp_path, monkeypatch):
    import pgolf.tools.data.build as build

    seen, train = [], build.train_tokenizer
    monkeypatch.setattr(
        build, "train_tokenizer", lambda docs, *a, **k: seen.extend(docs) or train(docs, *a, **k)
    )
    built = build_dataset(_docs(40), out_root=tmp_path, name="k", vocab_size=300, val_docs=4, dev_docs=5)
    held = {*built.manifest["splits"]["val"]["doc_sha256"], *built.manifest["splits"]["dev"]["doc_sha256"]}
    assert len(seen) == 31 and not {doc_hash(d) for d in seen} & held


def test_the_first_rule_takes_the_next_documents_in_input_order(tmp_path):
    docs = _docs(40)
    built = build_dataset(docs, out_root=tmp_path, name="f", vocab_size=300, val_docs=4, dev_docs=5,
                          selection="first")  # fmt: skip
    splits = built.manifest["splits"]
    assert splits["dev"]["doc_sha256"] == [doc_hash(d) for d in docs[4:9]]
    assert splits["train"]["doc_sha256"] == [doc_hash(d) for d in docs[9:]]


def test_bad_dev_docs_are_refused_naming_the_field(tmp_path):
    assert len(split_documents(_docs(20), 5)[1]) == 15
    for n in (15, 40, -1):
        message = rf"dev_docs={n} must be >= 0 and leave training documents; the validation split left 15"
        with pytest.raises(DataBuildError, match=message):
            build_dataset(_docs(20), out_root=tmp_path, name="b", vocab_size=300, val_docs=5, dev_docs=n)


def test_the_demo_corpus_gets_a_dev_split_only_when_asked_in_its_own_folder(tmp_path):
    from pgolf.tools.data.stdlib_corpus import build_demo_dataset

    a = build_demo_dataset(tmp_path, vocab_size=512, val_docs=4, max_docs=40, dev_docs=5)
    assert a.dataset_dir.name == "pgolf_demo_sp512_dev5" and a.manifest["splits"]["dev"]["docs"] == 5
    again = build_demo_dataset(tmp_path, vocab_size=512, val_docs=4, max_docs=40, dev_docs=5)
    assert again.manifest["build_seconds"] == a.manifest["build_seconds"]  # the cached build, reused
    plain = build_demo_dataset(tmp_path, vocab_size=512, val_docs=4, max_docs=40)
    assert plain.dataset_dir.name == "pgolf_demo_sp512" and "dev" not in plain.manifest["splits"]
    assert plain.manifest["splits"]["train"]["docs"] == a.manifest["splits"]["train"]["docs"] + 5
    assert (a.dataset_dir / "manifest.json").is_file()  # side by side: neither build replaced the other


def test_the_data_commands_take_dev_docs_and_say_how_to_tune_on_it(tmp_path, capsys):
    from pgolf.tools.cli import main

    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"text": d}) + "\n" for d in _docs(60)))
    args = [
        "data",
        "build",
        "--input",
        str(docs),
        "--vocab",
        "300",
        "--out",
        str(tmp_path / "d"),
        "--name",
        "x",
    ]
    assert main([*args, "--val-docs", "5", "--dev-docs", "6"]) == 0
    out = capsys.readouterr().out
    assert "datasets/x_sp300_dev6" in out and "\ndev       6 docs" in out and "--data.score_split dev" in out
    assert main([*args, "--val-docs", "5", "--dev-docs", "55"]) == 2
    assert "dev_docs=55 must be >= 0 and leave training documents" in capsys.readouterr().err


def test_caseops_dev_shards_get_byte_sidecars(tmp_path):
    docs = [d.title() if i % 3 else d.upper() for i, d in enumerate(_docs(60))]
    built = build_dataset(docs, out_root=tmp_path, name="c", vocab_size=300, val_docs=5, dev_docs=6,
                          caseops=True)  # fmt: skip
    dev = built.manifest["splits"]["dev"]
    assert built.dataset_dir.name == "c_sp300_caseops_dev6"
    assert dev["byte_sidecar"]["bytes"] == dev["utf8_bytes"]
    data = DataConfig(root=str(tmp_path), dataset="datasets/c_sp300_caseops_dev6",
                      tokenizer="tokenizers/c_300_caseops_dev6_bpe.model", score_split="dev")  # fmt: skip
    valset = load_validation(data, 1024)
    assert [f.name for f in valset.sidecars] == ["fineweb_dev_bytes_000000.bin"]
    assert int(valset.target_bytes.sum()) == dev["utf8_bytes"]


def test_scoring_on_dev_reads_the_dev_shards_and_labels_them(dev_data, plain_data):
    root, dev_built = dev_data
    dev = load_validation(_data(root, dev_built, score_split="dev"), 1024)
    val = load_validation(_data(root, dev_built), 1024)
    assert dev.split == "dev" and val.split == "val"
    assert [f.name for f in dev.files] == [s["file"] for s in dev_built.manifest["splits"]["dev"]["shards"]]
    assert dev.tokens.numel() == dev_built.manifest["splits"]["dev"]["tokens"]
    assert all(f.name.startswith("fineweb_val_") for f in val.files)
    assert dev.first_docs(3).describe() == "first 3 of 12 dev documents"
    # a dataset without a dev split, and dev shards under the validation pattern, are refused
    with pytest.raises(DataError, match=r"no dev split \(pgolf data build --dev-docs N\)"):
        load_validation(_data(*plain_data, score_split="dev"), 1024)
    with pytest.raises(DataError, match=r"'fineweb_dev_\*\.bin' matches dev shards: score them with data"):
        load_validation(_data(root, dev_built, val_pattern="fineweb_dev_*.bin"), 1024)
    with pytest.raises(ConfigError, match=r"data\.score_split='test'; expected val or dev"):
        DataConfig(score_split="test")


def test_training_never_reads_a_held_out_shard(dev_data, tmp_path):
    """A dev shard copied under a training name is refused whichever split is scored, by its content;
    a manifest that lists a document in both the train and the dev split is refused."""
    root, built = dev_data
    leaky = tmp_path / "leaky"
    shutil.copytree(root / "datasets", leaky / "datasets")
    folder = leaky / "datasets" / built.dataset_dir.name
    train = find_shards(folder, "fineweb_train_*.bin")
    vals = find_shards(folder, "fineweb_val_*.bin")
    check_train_val_disjoint(train, vals, folder)  # as built: fine
    shutil.copyfile(folder / "fineweb_dev_000001.bin", folder / "fineweb_train_999999.bin")
    with pytest.raises(DataError, match=r"holds the same tokens as held-out shard .*fineweb_dev_000001\.bin"):
        check_train_val_disjoint([*train, folder / "fineweb_train_999999.bin"], vals, folder)
    (folder / "fineweb_train_999999.bin").unlink()
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["splits"]["train"]["doc_sha256"].append(manifest["splits"]["dev"]["doc_sha256"][3])
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"1 document\(s\) are in both the train and the dev split"):
        check_train_val_disjoint(train, vals, folder)


def test_a_training_pattern_that_reaches_held_out_files_is_refused_with_or_without_a_manifest(
    dev_data, tmp_path
):
    """Dev shards and byte sidecars are refused by name even where a copy lost its manifest; with the
    manifest, any file it does not list as a training shard is refused."""
    from pgolf.data.manifest import _check_manifest_splits
    from pgolf.data.valset import train_files

    root, built = dev_data
    bare = tmp_path / "bare"
    shutil.copytree(root, bare)
    folder = bare / built.dataset_dir.relative_to(root)
    (folder / "manifest.json").unlink()
    data = dataclasses.replace(_data(root, built, train_pattern="fineweb_*.bin"), root=str(bare))
    valset = load_validation(dataclasses.replace(_data(root, built), root=str(bare)), 1024)
    with pytest.raises(DataError, match=r"data\.train_pattern matches fineweb_dev_000000\.bin, a dev shard"):
        train_files(data, valset)
    shutil.copyfile(folder / "fineweb_train_000000.bin", folder / "fineweb_val_bytes_000000.bin")
    with pytest.raises(DataError, match=r"fineweb_val_bytes_000000\.bin, a dev shard or a byte sidecar"):
        train_files(dataclasses.replace(data, train_pattern="fineweb_[tv]*.bin"), valset)
    listed = tmp_path / "listed"  # a manifest that lists a sidecar (a CaseOps build's), named like a shard
    shutil.copytree(built.dataset_dir, listed)
    manifest = json.loads((listed / "manifest.json").read_text())
    manifest["splits"]["val"]["byte_sidecar"] = {"shards": [{"file": "fineweb_x_000000.bin", "tokens": 1}]}
    (listed / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DataError, match=r"fineweb_x_000000\.bin is not one of its training shards"):
        _check_manifest_splits(listed, [listed / "fineweb_train_000000.bin", listed / "fineweb_x_000000.bin"])
    _check_manifest_splits(listed, [listed / "fineweb_train_000000.bin"])  # its own training shard: fine


def test_a_scored_shard_the_manifest_does_not_list_is_never_the_validation_set(dev_data, tmp_path):
    root, built = dev_data
    extra = tmp_path / "extra"
    shutil.copytree(root, extra)
    folder = extra / built.dataset_dir.relative_to(root)
    data = dataclasses.replace(_data(root, built), root=str(extra))
    assert load_validation(data, 1024).unlisted == ()
    shutil.copyfile(folder / "fineweb_train_000000.bin", folder / "fineweb_val_000099.bin")
    assert load_validation(data, 1024).unlisted == ("fineweb_val_000099.bin",)


@pytest.fixture(scope="module")
def dev_run(dev_data, tmp_path_factory):
    """A 6-step debug run scoring the dev split."""
    from conftest import debug_config
    from pgolf.pipeline import run

    root, built = dev_data
    d = _data(root, built, score_split="dev")
    over = {"data.dataset": d.dataset, "data.tokenizer": d.tokenizer, "data.score_split": "dev",
            "train.iterations": 6, "train.val_every": 3}  # fmt: skip
    cfg = debug_config(root, **over)
    out = tmp_path_factory.mktemp("devrun")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # nothing here compares figures; one thread is kinder to a shared machine
    try:
        return cfg, run(cfg, out_dir=out, echo=False), out
    finally:
        torch.set_num_threads(threads)


def test_a_dev_run_trains_on_train_only_and_says_dev_everywhere(dev_run, dev_data, capsys):
    from pgolf.tools.cli import main
    from pgolf.tools.plot import load_runs
    from pgolf.tools.summary import run_summary

    _, result, out = dev_run
    _, built = dev_data
    r = json.loads((out / "result.json").read_text())
    assert r["split"] == "dev" and r["official_score"] is False
    assert r["config"]["data"]["score_split"] == "dev"
    dev_tokens = built.manifest["splits"]["dev"]["tokens"]  # scored: the whole windows of the dev stream
    assert dev_tokens - 64 < r["val_tokens"] < dev_tokens
    log = (out / "train.log").read_text()
    assert "data.score_split:dev every score is a dev score, not validation" in log
    assert "step:3/6 dev_loss:" in log and "dev_bpb:" in log and "unofficial_" in log
    assert "val_bpb:" not in log and not any(line.startswith("final_") for line in log.splitlines())
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    data = next(e for e in events if e["event"] == "data")
    assert data["split"] == "dev" and data["train_tokens"] == built.manifest["splits"]["train"]["tokens"]
    assert {e["split"] for e in events if e["event"] == "val"} == {"dev"}
    assert not any(e["event"] in ("final", "final_exact") for e in events)
    # what the tools print: the run's summary, pgolf runs, the plots' curves
    summary = run_summary(result)
    assert "dev_bpb pre-quant" in summary and "val_bpb" not in summary and "not validation" in summary
    assert main(["runs", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "on track, dev split" in printed and "val_bpb" not in printed  # the header claims no split
    curve = load_runs([out])[0]
    assert curve.split == "dev" and len(curve.val) >= 2 and curve.val[0, 0] == 3


def test_a_dev_score_is_never_a_record_or_a_comparison(dev_run, tmp_path):
    from pgolf.tools.records.check import Seed, load_subject, rule_split, rule_val_leak
    from pgolf.tools.records.folder import RecordInfo, make_record
    from pgolf.tools.records.logs import load_scores
    from pgolf.tools.records.splits import split_verdict

    cfg, _, out = dev_run
    rule = rule_split(load_subject(out))
    assert rule.status == "fail" and "scored the dev split (data.score_split=dev)" in rule.detail
    old = Seed("seed1", {"config": {"data": {}}}, None, None)  # a result from before splits existed
    assert split_verdict([old]) == ("pass", "1 seed(s) scored the validation split")
    # the leakage rule looks for the dev documents in the training tokens too
    leak = rule_val_leak(load_subject(out))
    assert leak.status == "pass", leak.detail
    assert re.search(r"0 of \d+ validation documents \(of 10;", leak.detail)
    assert re.search(r"0 of \d+ dev documents \(of 12;", leak.detail)
    with pytest.raises(PgolfError, match="a dev-split score"):
        load_scores(out)
    rec = dataclasses.replace(cfg, track="cpu-5min-2mb")
    with pytest.raises(PgolfError, match=r"data\.score_split=dev: a record is scored on validation"):
        make_record(rec, [1, 2, 3], RecordInfo("dev"), root=tmp_path)
    assert not (tmp_path / "cpu-5min-2mb").exists()


def test_choosing_an_evaluation_method_scores_dev_by_default(dev_run, tmp_path, capsys):
    path = Path(__file__).parent.parent / "benchmarks" / "eval_methods.py"
    spec = importlib.util.spec_from_file_location("eval_methods", path)
    methods = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(methods)
    _, result, out = dev_run
    rows = tmp_path / "rows.json"
    assert methods.main([str(out / "artifact.pgolf"), "--only", "plain", "--json", str(rows)]) == 0
    assert capsys.readouterr().out.startswith("scoring on: the dev split of")
    written = json.loads(rows.read_text())
    assert written["split"] == "dev" and written["rows"][0]["split"] == "dev"
    assert written["rows"][0]["val_bpb"] == pytest.approx(result.roundtrip.val_bpb, abs=1e-5)
    assert methods.main([str(out / "artifact.pgolf"), "--only", "plain", "--split", "val"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("scoring on: the VALIDATION split") and '"split": "val"' in text
    # --set adds methods as typed eval overrides; an unknown field is named
    assert methods.method_of("x=ttt_lr:0.02;tilt:true;stride:64") == (
        "x", {"ttt_lr": 0.02, "tilt": True, "stride": 64})  # fmt: skip
    with pytest.raises(SystemExit, match="--set y: eval has no field 'lr'"):
        methods.method_of("y=lr:1")


def test_choosing_a_pack_policy_reads_the_split_the_run_scored(dev_run):
    path = Path(__file__).parent.parent / "benchmarks" / "bench_pack.py"
    spec = importlib.util.spec_from_file_location("bench_pack", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _, _, out = dev_run
    with pytest.raises(SystemExit, match=r"scored the dev split; this benchmark chooses policies on val"):
        bench.main([str(out), "--split", "val"])


# ---- searches: pgolf sweep and benchmarks/ablate.py score dev by default --------------------------


def test_searches_refuse_a_dataset_without_a_dev_split_unless_told(dev_data, plain_data):
    root, dev_built = dev_data
    split, line = search_split(_data(root, dev_built), "dev", "--split val")
    assert split == "dev" and line.startswith("scoring on: the dev split of") and "12 documents" in line
    with pytest.raises(ConfigError, match=r"has no dev split to tune on.*--dev-docs N.*or tune on validation "
                       r"with --split val"):  # fmt: skip
        search_split(_data(*plain_data), "dev", "--split val")
    split, line = search_split(_data(*plain_data), "val", "--split val")
    assert split == "val" and "VALIDATION split" in line and "biased" in line


def test_a_sweep_file_scores_dev_unless_it_says_val(tmp_path):
    from pgolf.tools.sweep.spec import load_spec, trial_overrides
    from pgolf.tools.sweep.study import open_study, study_split

    path = tmp_path / "s.toml"
    path.write_text('preset = "debug"\n[space]\n"model.num_layers" = [1, 2]\n')
    spec = load_spec(path)
    assert spec.split == "dev" and trial_overrides(spec, {}, 1)["data.score_split"] == "dev"
    path.write_text('preset = "debug"\nsplit = "val"\n[space]\n"model.num_layers" = [1, 2]\n')
    assert "data.score_split" not in trial_overrides(load_spec(path), {}, 1)
    for text, message in [
        ('split = "test"\n[space]\n"model.num_layers" = [1]\n', r"split must be one of \('dev', 'val'\)"),
        ('[fixed]\n"data.score_split" = "val"\n[space]\n"model.num_layers" = [1]\n', "set by the sweep"),
    ]:
        path.write_text('preset = "debug"\n' + text)
        with pytest.raises(ConfigError, match=message):
            load_spec(path)

    pytest.importorskip("optuna")
    import dataclasses

    import optuna

    spec = load_spec(_dev_spec(path))
    study = open_study(tmp_path / "new", spec)
    assert study_split(study) == "dev"
    with pytest.raises(ConfigError, match="scored the dev split and this sweep file scores val"):
        open_study(tmp_path / "new", dataclasses.replace(spec, split="val"))
    old = optuna.create_study(study_name="pgolf", storage=f"sqlite:///{tmp_path / 'old.db'}")
    old.add_trial(optuna.trial.create_trial(params={}, distributions={}, value=1.0))
    (tmp_path / "old").mkdir()
    (tmp_path / "old.db").rename(tmp_path / "old" / "study.db")  # a sweep folder's study from before splits
    with pytest.raises(ConfigError, match="scored the val split and this sweep file scores dev"):
        open_study(tmp_path / "old", spec)
    assert study_split(open_study(tmp_path / "old", dataclasses.replace(spec, split="val"))) == "val"


def _dev_spec(path: Path) -> Path:
    path.write_text('preset = "debug"\n[space]\n"model.num_layers" = [1, 2]\n')
    return path


def test_a_sweep_on_data_without_a_dev_split_stops_before_its_first_run(plain_data, tmp_path, capsys):
    pytest.importorskip("optuna")
    from pgolf.tools.cli import main

    root, _ = plain_data
    spec = tmp_path / "s.toml"
    fixed = {
        "data.root": root,
        "data.dataset": "datasets/t_sp300",
        "data.tokenizer": "tokenizers/t_300_bpe.model",
    }
    body = "".join(f'"{k}" = "{v}"\n' for k, v in fixed.items())
    spec.write_text(f'preset = "debug"\n[fixed]\n{body}[space]\n"model.num_layers" = [1, 2]\n')
    assert main(["sweep", "run", str(spec), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert "has no dev split to tune on" in err
    assert 'or tune on validation with split = "val" in the sweep file' in err
    assert not (tmp_path / "out").exists()


def _ablate():
    path = Path(__file__).parent.parent / "benchmarks" / "ablate.py"
    spec = importlib.util.spec_from_file_location("ablate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ablate_scores_dev_by_default_and_says_so(dev_data, plain_data, tmp_path, capsys):
    ablate = _ablate()
    root, dev_built = dev_data
    flags = ["--data.root", str(root), f"--data.dataset={dev_built.dataset_dir.relative_to(root)}"]
    assert ablate.data_of("debug", flags, {}).dataset == str(dev_built.dataset_dir.relative_to(root))
    args = ablate.argparse.Namespace(base="debug", split="dev")
    assert ablate.scored_split(args, flags, {"base": {}}) == "dev"
    assert capsys.readouterr().out.startswith("scoring on: the dev split of")
    plain = ["--data.root", str(root), "--data.dataset", "datasets/t_sp300"]  # no dev split
    with pytest.raises(SystemExit, match=r"ablate: variant base: .* has no dev split to tune on"):
        ablate.scored_split(args, plain, {"base": {}})
    other = {"base": {}, "other": {"data.dataset": "datasets/t_sp300"}}  # a variant on another dataset
    with pytest.raises(SystemExit, match=r"ablate: variant other: .* has no dev split"):
        ablate.scored_split(args, flags, other)
    with pytest.raises(SystemExit, match=r"not a --data\.score_split flag"):
        ablate.scored_split(args, [*flags, "--data.score_split", "val"], {"base": {}})
    # a run kept from an ablation on the other split is not mixed in
    run = tmp_path / "abl" / "base-s1"
    run.mkdir(parents=True)
    (run / "result.json").write_text(json.dumps({"val_bpb": 2.0}))
    args = ablate.argparse.Namespace(out=str(tmp_path / "abl"), split="dev")
    with pytest.raises(SystemExit, match="scored the val split, this ablation dev: use another --out"):
        ablate.run_one("base", {}, args, 1, [])


# ---- pgolf check --sweep: the split a run's settings were chosen on ---------------------------------


def _fake_sweep(folder: Path, split: str | None, params: dict | None, data: dict | None = None) -> Path:
    for i, layers in enumerate((1, 2)):
        run = folder / "trials" / f"{i:04d}_seed1"
        run.mkdir(parents=True)
        data = {
            **(data or {"dataset": "datasets/t_sp300_dev12"}),
            **({"score_split": split} if split else {}),
        }
        result = {"config": {"model": {"num_layers": layers}, "data": data}}
        result.update({"split": split} if split else {})
        (run / "result.json").write_text(json.dumps(result))
    if params is not None:
        (folder / "best.json").write_text(json.dumps({"trial": 1, "params": params, "split": split}))
    return folder


def test_check_reports_the_split_a_runs_settings_were_chosen_on(dev_run, tmp_path, monkeypatch):
    import pgolf.tools.records.check as check_module
    from pgolf.tools.cli import main

    cfg, _, out = dev_run
    monkeypatch.setattr(check_module, "RULES", ())  # only the sweep's rule: the others are tested elsewhere
    layers = cfg.model.num_layers
    chosen = {"model.num_layers": layers, "optim.matrix_lr": cfg.optim.matrix_lr * (1 + 1e-12)}  # float noise
    here = {"root": cfg.data.root, "dataset": cfg.data.dataset, "tokenizer": cfg.data.tokenizer}
    rule = check_module.check(out, _fake_sweep(tmp_path / "dev", "dev", chosen, here))[0]
    assert rule.name == "settings chosen on a held-out split" and rule.status == "pass", rule.detail
    assert "2 run(s), 2 scored the dev split, on datasets/t_sp300_dev12" in rule.detail
    assert "on the dev split, none of its documents in this run's validation set" in rule.detail
    elsewhere = check_module.check(out, _fake_sweep(tmp_path / "elsewhere", "dev", chosen))[0]
    assert elsewhere.status == "unverified" and "no document list for the dev split" in elsewhere.detail
    other_build = (
        tmp_path / "build2"
    )  # another build of the corpus whose dev split holds validation documents
    shutil.copytree(Path(cfg.data.root), other_build)
    manifest_path = other_build / cfg.data.dataset / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["splits"]["dev"]["doc_sha256"][:3] = manifest["splits"]["val"]["doc_sha256"][:3]
    manifest_path.write_text(json.dumps(manifest))
    leaky = check_module.check(
        out, _fake_sweep(tmp_path / "leaky", "dev", chosen, {**here, "root": str(other_build)})
    )
    assert (
        leaky[0].status == "fail" and "holding 3 of the documents this run's score reads" in leaky[0].detail
    )
    old = check_module.check(out, _fake_sweep(tmp_path / "old", None, {"model.num_layers": layers}))[0]
    assert old.status == "fail" and "2 scored VALIDATION" in old.detail
    assert "tuned on the test set" in old.detail
    wider = {"model.num_layers": layers + 1}
    other = check_module.check(out, _fake_sweep(tmp_path / "other", "dev", wider))[0]
    assert other.status == "fail"
    assert f"model.num_layers: the run {layers}, the sweep {layers + 1}" in other.detail
    unfinished = check_module.check(out, _fake_sweep(tmp_path / "unfinished", "dev", None))[0]
    assert unfinished.status == "unverified" and "no best.json" in unfinished.detail
    with pytest.raises(PgolfError, match="not a sweep folder with finished runs"):
        check_module.check(out, tmp_path / "nowhere")
    assert main(["check", str(out), "--sweep", str(tmp_path / "old")]) == 1
    assert main(["check", str(out), "--sweep", str(tmp_path / "dev"), "--json"]) == 0


def test_a_dev_sweep_judges_evaluation_time_as_projected_onto_validation(dev_run, dev_data):
    """The track's eval cap is for the validation set: a dev run's evaluation time is scaled by the
    two splits' token counts (validation 10 documents, dev 12 here) before it is judged."""
    from pgolf.tools.sweep.runs import judge

    _, built = dev_data
    _, _, out = dev_run
    result = json.loads((out / "result.json").read_text())
    val, dev = built.manifest["splits"]["val"]["tokens"], result["val_tokens"]
    cap = 300.0
    assert val < dev  # 10 validation documents, 12 dev ones
    over_on_dev = {**result, "track": "cpu-5min-2mb", "eval_seconds": cap * dev / val * 0.99}
    over_on_dev["off_track"] = ["evaluation took (as measured on dev)"]
    assert judge(over_on_dev, True) == []  # over the cap on dev, within it projected onto validation
    long = {**over_on_dev, "eval_seconds": cap * 2 * dev / val}
    (reason,) = judge(long, True)
    assert reason.startswith("evaluation took 600.00 s, over the cpu-5min-2mb track's 300 s cap")
    assert f"projected onto validation's {val:,} tokens" in reason


def test_repacking_a_dev_run_scores_and_says_dev(dev_run, tmp_path, capsys):
    from pgolf.tools.cli import main

    _, _, out = dev_run
    assert main(["pack", str(out), "--out", str(tmp_path / "a.pgolf")]) in (0, 1)  # debug: no track to judge
    printed = capsys.readouterr().out
    assert "dev_bpb" in printed and "val_bpb" not in printed
    assert main(["pack", str(out), "--out", str(tmp_path / "b.pgolf"), "--json"]) in (0, 1)
    assert json.loads(capsys.readouterr().out)["split"] == "dev"
