"""The README's main job end to end (shortened): vocabulary -> records -> BERT pretraining ->
fine-tuning -> SavedModel export -> predictions from a fresh process; and the GPT leg."""
import json


def test_main_job_runs_end_to_end(tmp_path, capsys):
    from absl import flags
    from tools import main_job
    flags.FLAGS(["main_job", f"--output_dir={tmp_path}", "--pretrain_steps=40",
                 "--gpt_steps=30", "--finetune_epochs=3"])
    main_job.main([])  # raises SystemExit if a loss does not fall or the export disagrees
    printed = capsys.readouterr().out
    assert "max |export - in-process Keras| probability difference" in printed
    assert (tmp_path / "export" / "demo_sentiment" / "1" / "saved_model.pb").exists()
    assert (tmp_path / "export" / "demo_gpt_lm" / "1" / "saved_model.pb").exists()
    results = json.loads((tmp_path / "finetune" / "results.json").read_text())
    assert results["runs"][0]["metrics"]["accuracy"] >= 0.0
    assert (tmp_path / "bert_pretrain" / "metrics.jsonl").exists()
