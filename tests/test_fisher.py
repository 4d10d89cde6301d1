"""The Fisher allocation (quant/fisher.py): row sensitivities from hooks against a direct
computation, the allocation rule, its export, and the config's guards."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pgolf.config.model import ModelConfig
from pgolf.config.quant import QuantConfig
from pgolf.errors import ConfigError
from pgolf.model.gpt import GPT
from pgolf.model.params import param_roles
from pgolf.quant.export import quantize_state_dict
from pgolf.quant.fisher import collect_sensitivities, fisher_clips, predicted_gap
from pgolf.quant.grid import GridSpec, dequantize


def _tiny(tied: bool = True) -> GPT:
    torch.manual_seed(3)
    cfg = ModelConfig(vocab_size=64, num_layers=1, model_dim=32, num_heads=4, num_kv_heads=2,
                      tie_embeddings=tied, logit_softcap=30.0)  # fmt: skip
    model = GPT(cfg)
    for p in model.parameters():
        if p.ndim == 2:
            p.data.normal_(0, 0.2)
    return model


def _direct(model: GPT, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """The same quantities from retained activation gradients and the softcap's closed-form gradient."""
    acts = {}

    def keep(name):
        def hook(mod, inputs, out):
            out.retain_grad()
            acts[name] = (inputs[0], out)

        return hook

    modules = {"q": model.blocks[0].attn.c_q, "emb": model.tok_emb, "h": model.head_in}
    hooks = [m.register_forward_hook(keep(name)) for name, m in modules.items()]
    model.eval()
    (model(x, y) * y.numel()).backward()
    for h in hooks:
        h.remove()
    q_in, q_out = acts["q"]
    g = q_out.grad.reshape(-1, q_out.shape[-1])
    xn2 = q_in.detach().reshape(-1, q_in.shape[-1]).pow(2).sum(-1)
    c_q = torch.stack([(g[:, r] ** 2 * xn2).sum() / q_in.shape[-1] for r in range(g.shape[1])])
    emb_out = acts["emb"][1]
    total_in = float(emb_out.grad.pow(2).sum()) / emb_out.shape[-1]  # every lookup's input term
    counts = torch.bincount(x.reshape(-1), minlength=64).double()
    c_emb = (total_in * (counts + 1) / (counts.sum() + 64)).float()  # shared out by lookups + 1
    h = acts["h"][1].detach().reshape(-1, acts["h"][1].shape[-1])
    z = h @ model.tok_emb.weight.detach().T
    cap = model.cfg.logit_softcap
    t = torch.tanh(z / cap)
    gz = torch.softmax(cap * t, -1) - F.one_hot(y.reshape(-1), z.shape[1])
    gz = gz * (1 - t * t)
    c_emb += (gz.pow(2) * h.pow(2).sum(-1, keepdim=True)).sum(0) / h.shape[1]
    model.zero_grad(set_to_none=True)
    return {"blocks.0.attn.c_q.weight": c_q, "tok_emb.weight": c_emb}


def test_sensitivities_match_a_direct_computation_and_leave_no_gradients():
    model = _tiny()
    x, y = torch.randint(0, 64, (2, 12)), torch.randint(0, 64, (2, 12))
    names = {"blocks.0.attn.c_q.weight", "tok_emb.weight", "blocks.0.mlp.fc.weight"}
    sens = collect_sensitivities(model, names, [(x, y)])
    assert set(sens) == names and all(p.grad is None for p in model.parameters())
    direct = _direct(model, x, y)
    for name, want in direct.items():
        assert torch.allclose(sens[name], want, rtol=1e-4, atol=1e-8), name
    twice = collect_sensitivities(model, names, [(x, y), (x, y)])  # sums over batches
    assert torch.allclose(twice["blocks.0.attn.c_q.weight"], 2 * sens["blocks.0.attn.c_q.weight"], rtol=1e-5)
    # the input term shared out by the given token counts instead (add-one smoothed)
    counts = torch.zeros(64, dtype=torch.float64)
    counts[5] = 99.0
    skewed = collect_sensitivities(model, names, [(x, y)], {"tok_emb.weight": counts})
    delta = skewed["tok_emb.weight"] - sens["tok_emb.weight"]  # input term moves, head term stays
    assert delta[5] > 0 and (delta[torch.arange(64) != 5] <= 1e-6).all()
    total = float(sens["tok_emb.weight"].sum())
    assert float(skewed["tok_emb.weight"].sum()) == pytest.approx(total, rel=1e-5)


def test_an_untied_embedding_gets_only_its_input_rows():
    model = _tiny(tied=False)
    x, y = torch.randint(0, 32, (1, 10)), torch.randint(0, 64, (1, 10))  # tokens 32..63 never input
    sens = collect_sensitivities(model, {"tok_emb.weight", "lm_head.weight"}, [(x, y)])
    seen = torch.zeros(64, dtype=torch.bool)
    seen[x.unique()] = True
    emb = sens["tok_emb.weight"]
    assert emb[seen].min() > emb[~seen].max() > 0  # the never-seen rows get one pseudo-lookup each
    assert torch.allclose(emb[~seen], emb[~seen][0].expand(int((~seen).sum())))
    assert sens["lm_head.weight"].shape == (64,)


def test_the_allocation_rule():
    torch.manual_seed(4)
    w = torch.randn(5, 40) * torch.tensor([1.0, 1.0, 1.0, 0.01, 100.0])[:, None]
    sens = {"w": torch.tensor([1.0, 4.0, 0.25, 1e-12, 1.0])}
    spec = GridSpec("int8")
    clips = fisher_clips({"w": w}, sens, {"w": spec}, step=0.05, max_rms=2.0)
    steps = clips["w"] / spec.qmax
    rms, amax = w.pow(2).mean(1).sqrt(), w.abs().amax(1)
    assert torch.isclose(steps[0], torch.tensor(0.05))  # the median row gets the step
    assert torch.isclose(steps[1], torch.tensor(0.025))  # 4x the sensitivity, half the step
    assert torch.isclose(steps[2], torch.tensor(0.1))
    assert torch.isclose(steps[3], 2.0 * rms[3])  # never exercised: capped at max_rms x RMS
    assert torch.isclose(steps[4], amax[4] / spec.qmax) and steps[4] > 0.05  # ...and never clipped
    assert (clips["w"] >= amax - 1e-6).all()
    gap = predicted_gap({"w": w}, sens, clips, {"w": spec}, tokens=10)
    assert gap == pytest.approx(float((40 * sens["w"] * steps**2).sum()) / 24 / 10, rel=1e-5)
    assert fisher_clips({"w": w}, {}, {"w": spec}, 0.05, 2.0) == {}


def test_fisher_export_uses_the_allocated_steps_and_falls_back_to_the_role_rule():
    model = _tiny()
    state = model.state_dict()
    cfg = QuantConfig(matrix="int8", embed="int8", alloc="fisher", fisher_step=0.02, keep_float_max_numel=100)
    x, y = torch.randint(0, 64, (2, 12)), torch.randint(0, 64, (2, 12))
    sens = collect_sensitivities(model, {"tok_emb.weight", "blocks.0.attn.c_q.weight"}, [(x, y)])
    roles = param_roles(model)
    entries, stats = quantize_state_dict(state, roles, cfg, sensitivities=sens, tokens=24)
    assert stats.fisher_tensors == 2 and stats.fisher_predicted_gap > 0
    assert "fisher_tensors:2" in stats.summary()
    specs = {n: GridSpec("int8") for n in sens}
    clips = fisher_clips(state, sens, specs, 0.02, 2.0)
    for name, clip in clips.items():
        assert torch.equal(entries[name].scale, (clip / 127).half())
        err = (dequantize(entries[name]).float() - state[name]).abs().amax(1)
        assert (err <= clip / 127 / 2 * 1.01 + 1e-6).all()
    role, _ = quantize_state_dict(
        state, roles, QuantConfig(matrix="int8", embed="int8", keep_float_max_numel=100)
    )
    assert torch.equal(entries["blocks.0.mlp.fc.weight"].scale, role["blocks.0.mlp.fc.weight"].scale)
    assert not torch.equal(entries["tok_emb.weight"].scale, role["tok_emb.weight"].scale)


def test_config_guards():
    int8 = {"matrix": "int8", "embed": "int8"}
    with pytest.raises(ConfigError, match=r"quant\.alloc='hessian'"):
        QuantConfig(alloc="hessian")
    with pytest.raises(ConfigError, match=r"quant\.qat=true with quant\.alloc=fisher"):
        QuantConfig(alloc="fisher", qat=True, **int8)
    with pytest.raises(ConfigError, match="fisher_step"):
        QuantConfig(alloc="fisher", fisher_step=0.0, **int8)
    with pytest.raises(ConfigError, match=r"quant\.matrix, quant\.embed=int8-contest: its 1/127 step floor"):
        QuantConfig(alloc="fisher")
    with pytest.raises(ConfigError, match=r"quant\.mlp=int8-contest"):
        QuantConfig(alloc="fisher", mlp="int8-contest", **int8)
    assert QuantConfig(alloc="fisher", **int8).calibrates and QuantConfig(gptq=True).calibrates
    assert not QuantConfig().calibrates
    with pytest.raises(ValueError, match="needs the calibration's sensitivities"):
        quantize_state_dict(_tiny().state_dict(), param_roles(_tiny()), QuantConfig(alloc="fisher", **int8))


def test_every_embedding_table_gets_a_sensitivity_and_counts_by_its_own_index():
    """BigramHash rows are counted by bucket, the token tables by token; a table whose output reaches
    no loss (value embeddings on no layer) is not an error; the model is left as found."""
    from pgolf.train.calibration import lookup_counts

    torch.manual_seed(5)
    cfg = ModelConfig(vocab_size=64, num_layers=2, model_dim=32, num_heads=4, num_kv_heads=2,
                      bigram_buckets=32, bigram_dim=8, value_embed_dim=8, value_embed_layers=0)  # fmt: skip
    model = GPT(cfg)
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    model.train()
    batches = [(torch.randint(0, 64, (2, 12)), torch.randint(0, 64, (2, 12))) for _ in range(3)]
    counts = lookup_counts(model, batches, torch.device("cpu"))
    assert counts["bigram.embed.weight"].shape == (32,) and counts["tok_emb.weight"].sum() == 72
    buckets = sum(torch.bincount(model.bigram.bucket_ids(x).flatten(), minlength=32) for x, _ in batches)
    assert torch.equal(counts["bigram.embed.weight"], buckets.double())
    names = {"tok_emb.weight", "bigram.embed.weight", "value_embed.embed.weight", "bigram.proj.weight"}
    sens = collect_sensitivities(model, names, batches[:1], counts)
    assert set(sens) == names and model.training and all(p.grad is None for p in model.parameters())
    big = sens["bigram.embed.weight"]
    ratio = big / (counts["bigram.embed.weight"].float() + 1)  # shared out by buckets counted + 1
    assert torch.allclose(ratio, ratio[0].expand_as(ratio), rtol=1e-4)
    assert (sens["value_embed.embed.weight"] == 0).all()  # reaches no layer: no gradient, no term


def test_fisher_training_run_and_repack_end_to_end(debug_cfg, tmp_path):
    """The calibration runs on training batches on the training clock after GPTQ's, the artifact holds
    the allocated grids and scores what the run reported, and a re-pack at another step is smaller."""
    from pgolf.eval.artifact import evaluate_artifact
    from pgolf.pipeline import run
    from pgolf.tools.packtool import repack

    cfg = debug_cfg(**{
        "train.iterations": "6", "quant.matrix": "int8", "quant.embed": "int8", "quant.alloc": "fisher",
        "quant.fisher_step": "0.02", "quant.fisher_batches": "2", "quant.fisher_count_batches": "3",
        "quant.keep_float_max_numel": "1000",
        "quant.gptq": "true", "quant.gptq_batches": "2",
    })  # fmt: skip
    r = run(cfg, out_dir=tmp_path, echo=False)
    log = (tmp_path / "train.log").read_text()
    assert "gptq_calibration batches:2 matrices:13 fisher_calibration batches:2 counted:" in log
    counted = int(log.split("counted:")[1].split()[0])
    assert counted == 5 * cfg.train.batch_tokens // cfg.train.microbatches and "tensors:13 train_time" in log
    assert "fisher_tensors:13 fisher_predicted_gap:" in log and r.score.label == "int8-fisher_zlib"
    assert evaluate_artifact(r.artifact_path).score.result == r.roundtrip
    fine = repack(tmp_path, {}, tmp_path / "fine.pgolf", score=False)
    coarse = repack(tmp_path, {"quant.fisher_step": "0.08"}, tmp_path / "coarse.pgolf", score=False)
    assert coarse.size.model_bytes < fine.size.model_bytes
    assert coarse.fisher_predicted_gap > fine.fisher_predicted_gap > 0
