"""benchmarks/seqrec.py end to end on two synthetic datasets, one without item text (slow: ~30 s)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from bench_script import load_benchmark

from beatrec.seqrec.synthetic import SyntheticSeqConfig, write_seq_dataset

TINY = ["train.max_epochs=1", "train.threads=1", "codes.k=4", "eager.d_model=16", "eager.n_heads=2", "eager.d_ff=32",
        "eager.enc_layers=1", "eager.dec_layers=1", "eager.beam_size=10", "sasrec.d_model=16", "sasrec.d_ff=32"]



@pytest.mark.slow
def test_seqrec_benchmark_partial_and_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BEATREC_CACHE", os.environ.get("BEATREC_CACHE", str(tmp_path / "cache")))
    root = tmp_path / "data"
    write_seq_dataset(SyntheticSeqConfig(n_users=40), root, name="Texted")
    write_seq_dataset(SyntheticSeqConfig(n_users=40, with_text=False), root, name="Plain")
    out = tmp_path / "seqrec.md"
    base = ["--data-root", str(root), "--datasets", "Texted", "Plain", "--runs", str(tmp_path / "runs"),
            "--out", str(out), *[a for s in TINY for a in ("--set", s)]]
    # a session stopped during EAGER: the report so far has SASRec and names the rows still to run
    import beatrec.seqrec.train as tr

    real = tr.train_run

    def stopped_at_eager(data, run, cfg, progress=True):  # noqa: ANN001, ANN202
        if cfg.model == "eager":
            raise KeyboardInterrupt
        return real(data, run, cfg, progress=progress)

    monkeypatch.setattr(tr, "train_run", stopped_at_eager)
    with pytest.raises(KeyboardInterrupt):
        load_benchmark("seqrec").main([*base, "--models", "SASRec", "EAGER"])
    assert "**Partial: not run yet:** EAGER." in out.read_text() and "| SASRec |" in out.read_text()
    monkeypatch.setattr(tr, "train_run", real)
    # next session: SASRec read back, EAGER trained
    assert load_benchmark("seqrec").main([*base, "--models", "SASRec", "EAGER", "--resume"]) == 0
    md = out.read_text()
    assert md.count("| SASRec |") == 2 and md.count("| EAGER |") == 4  # per dataset: its table, the paired table
    assert md.count("each row against SASRec, paired on the same test users") == 2
    paired = md[md.index("### Texted: each row against SASRec"):md.index("## Plain")]
    assert re.search(r"\| EAGER \| [+-]0\.\d{4} \| \[[+-]0\.\d{4}, [+-]0\.\d{4}\] \| ([01]\.\d{3}|\d\.\de-0\d) \|", paired)
    assert "Partial" not in md  # only the requested rows were planned
    assert (tmp_path / "seqrec_Texted.png").stat().st_size > 0 and "](seqrec_Texted.png)" in md  # validation curves
    # second session: every row, --resume reads the two finished ones back (their files untouched)
    mtime = (tmp_path / "runs" / "Texted" / "eager" / "model.safetensors").stat().st_mtime_ns
    assert load_benchmark("seqrec").main([*base, "--resume", "--models", "SASRec", "EAGER", "EAGER w/o transfer task",
                               "EAGER w/o second stream", "--merges", "joint"]) == 0
    md2 = out.read_text()
    assert (tmp_path / "runs" / "Texted" / "eager" / "model.safetensors").stat().st_mtime_ns == mtime
    texted = md2[md2.index("## Texted"):md2.index("## Plain")]
    plain = md2[md2.index("## Plain"):]
    assert "| EAGER w/o transfer task |" in texted and "| EAGER w/o second stream |" in texted
    assert "| EAGER w/o transfer task |" not in plain and "same model as EAGER here (no item text)" in plain
    assert "Partial" not in md2
    # --merges: the two-stream EAGER row decoded again with the joint merge, kept beside the run
    merged = [r for r in texted.splitlines() if r.startswith(("| likelihood |", "| joint |"))]
    assert len(merged) == 2 and "each stream merge" not in plain
    assert (tmp_path / "runs" / "Texted" / "eager" / "evaluation_merge-joint.json").is_file()
    rows = lambda t: [r for r in t.splitlines() if r.startswith("| EAGER |")]  # noqa: E731
    assert rows(md2) == rows(md)  # read back, not retrained
    # --report-only trains nothing: finished rows are read, the rest listed as not run yet
    import beatrec.seqrec.train as tr2

    monkeypatch.setattr(tr2, "train_run", lambda *a, **k: pytest.fail("--report-only trained a row"))
    assert load_benchmark("seqrec").main([*base, "--report-only", "--models", "SASRec", "EAGER",
                                          "TIGER-style (semantic codes)", "EAGER w/o contrastive task",
                                          "--title", "A follow-up study"]) == 0
    md3 = out.read_text()
    assert md3.startswith("# A follow-up study\n")
    texted3, plain3 = md3[md3.index("## Texted"):md3.index("## Plain")], md3[md3.index("## Plain"):]
    assert "**Partial: not run yet:** TIGER-style (semantic codes), EAGER w/o contrastive task." in texted3
    assert "semantic codes need item text" in plain3 and "**Partial: not run yet:** EAGER w/o contrastive task." in plain3
    assert rows(md3) == rows(md)
    assert [r for r in md3.splitlines() if r.startswith("| joint |")] == merged[1:]  # read back from the run


def test_same_run_ignores_runtime_settings_and_runs_location() -> None:
    from beatrec.seqrec.config import load_seqrec_config

    bench = load_benchmark("seqrec")
    here = load_seqrec_config("eager", None, ["behavior_run=/work/main/runs/seqrec/Beauty/sasrec", "train.threads=2"])
    there = load_seqrec_config("eager", None, ["behavior_run=/root/repo/.dev/runs/Beauty/sasrec", "train.device=cuda",
                                               "behavior_train.device=cuda", "text_encoder.device=cuda"])
    assert bench.same_run(here, there)
    other = load_seqrec_config("eager", None, ["behavior_run=/x/Sports/sasrec"])
    assert not bench.same_run(here, other)  # another dataset's behavior encoder
    assert not bench.same_run(here, load_seqrec_config("eager", None, [
        "behavior_run=/work/main/runs/seqrec/Beauty/sasrec", "eager.dropout=0.3"]))
    # a SASRec row does not read the generative sections: new EAGER defaults leave it the same run
    sas = load_seqrec_config("sasrec", None, [])
    assert bench.same_run(sas, load_seqrec_config("sasrec", None, ["eager.code_tokens=prefix", "codes.k=99"]))
    assert not bench.same_run(sas, load_seqrec_config("sasrec", None, ["sasrec.d_model=32"]))
