"""Federated LoRA on a real pretrained LLM: Financial PhraseBank utility and federated DPO on HH-RLHF.

    python -m benchmarks.real_llm [--preset cpu|gpu] [--model PATH] [--out bench-out/real_llm] [--skip-sft] [--skip-dpo]

SFT (OpenFedLLM's FPB metrics: accuracy and macro-F1 of the generated label): a held-out TEST split
(data.test_fraction, fixed by the seed; no party or baseline ever trains on it; every figure is
scored on it), the rest split over `--parties` parties by Dirichlet(`--alpha`) over labels. Rows:
zero-shot base; centralized LoRA (all train rows in one party, as many local steps per round as the
whole federation takes); Local (each party alone, the mean of their scores); every FL algorithm under
`plain`; FedAvg under `secagg` and `he`; FedAvg with example-level DP-SGD at epsilon 8 per party.
DPO: HH-RLHF harmless-base pairs (held-out TEST pairs), federated DPO under plain and secagg;
before/after: the policy's likelihood preference accuracy (log p(chosen) > log p(rejected)), and the
DPO implicit-reward accuracy and margin against the base (0 / 0 before training by construction).

Full GPU recipe (one H100/H200, SmolLM2-135M-Instruct or any 7B checkpoint with --model):
    python -m benchmarks.real_llm --preset gpu --device cuda
  = 10 parties, Dirichlet 0.5, test 20% (969 rows, all scored), 10 rounds x 10 local steps x batch 16,
    lr 2e-4 (1e-3 for 135M), LoRA r 16 all-linear, packing on, max_length 256; DPO 10 parties,
    5 rounds x 10 steps x 8 pairs, max_length 512, 231 held-out pairs. For 7B add
    `--set model.quantization=4bit --set training.gradient_checkpointing=true`.
CPU recipe (2 shared cores, SmolLM2-135M; a LoRA step at 4 x ~90 tokens is ~10 s there, one
generation pass over 40 prompts ~1 min, so this is the smallest run that still trains every party):
    python -m benchmarks.real_llm --preset cpu [--only "centralized,local,fedavg plain,..."]
  = the same TEST rows (first 40 scored), 600 train rows over 10 parties, 2 rounds x 1 step x batch 4,
    q/v LoRA r 8, lr 2e-3, max_length 96; DPO 4 parties, 2 rounds x 1 step x 2 pairs, 32 held-out pairs.

Issue 25's headline recipe (`--preset headline`: 3 of 10 parties sampled a round, 10 local steps x batch
8, 30 rounds = 300 sequential steps, the 300-step centralized run's budget; held-out every 5 rounds;
FedAdagrad/FedYogi/FedAdam at server lr 1e-2 decayed by the client lr's cosine, with FedAdagrad at
OpenFedLLM's constant 1e-3 and FedYogi at a constant 1e-2 as tagged runs (--adaptive-server-lr,
--adaptive-server-schedule, --tag); selection rule numpy-choice, as it began),
one run at a time, resumable across kills and sessions (the run directories live in the repository):
    python -m benchmarks.real_llm --preset headline --skip-dpo --resume --out bench-state/real_llm_headline \
        --headline docs/results/real_llm_headline.json --only "fedavg plain,local"
  then --only "fedavg secagg DP eps 8,fedavg secagg DP eps 4,fedavg secagg DP eps 1", the other algorithms
  ("fedprox plain,scaffold plain,..."), and "fedavg plain,fedavg secagg" with --rounds 5 --tag "5 rounds"
  (a shorter run that shows they equal plain; threshold he needs a quorum of 8 of 10 in a round, so
  "fedavg plain,fedavg he" with --set sampling.count=8 and another --tag). Each finished run is read
  back, not rerun; a stopped one continues from its last checkpoint. Wall time alone on the 2 cores,
  OMP_NUM_THREADS=2: ~25 s a party-round (10 steps), ~50 s an evaluation (200 TEST rows); DP-SGD
  rounds ~150-220 s (3 parties). `--report` then tables every finished run.

Any preset value can be overridden by its flag (--rounds, --steps, --batch, --lr, --test-max,
--max-length, --max-examples, --dpo-*). The runs in docs/results.md (2 cores, one process per line,
`OMP_NUM_THREADS=1`; third session, each line 35-60 min beside the others):
    L="--skip-dpo --rounds 10 --steps 3 --batch 8 --lr 2e-3 --test-max 200 --max-length 128 --max-examples 100000"
    python -m benchmarks.real_llm $L --set evaluation.every=2 --only "centralized,fedavg plain" --out A
    python -m benchmarks.real_llm $L --skip-zero-shot --only local --out B
    python -m benchmarks.real_llm $L --skip-zero-shot --set evaluation.every=2 --set model.quantization=4bit \
        --tag 4-bit --only centralized --out C
    python -m benchmarks.real_llm --skip-sft --dpo-rounds 4 --dpo-steps 8 --dpo-batch 2 --dpo-lr 1e-3 \
        --dpo-test 96 --out D
    python -m benchmarks.real_llm --merge A B C D --out bench-out/real_llm
  and (second session, the short run with every algorithm) `--rounds 2 --steps 2` with the same other flags.

Writes OUT/results.json, OUT/results.md, OUT/utility.png, OUT/curves.png (held-out scores by round, for
runs evaluated more than once: `--set evaluation.every=K`) and OUT/progress.log (one line per run), for
the runs of that invocation. `--report --out OUT [--headline JSON]` trains nothing: one table
(OUT/report.md), OUT/report-utility.png and OUT/report-curves.png over every finished run under OUT,
however many invocations or sessions they took. `--rescore --out OUT [--only RUNS] [--headline JSON]`
trains nothing either: it scores every finished run's final adapter (Local runs left out) and the base
model on ALL held-out TEST rows (the table's figures are a seeded sample of them), writes
OUT/rescore.md, OUT/rescore.json and OUT/rescore.png (intervals), then reports; each headline entry
gains `all_test`.

Modules: `sft` (presets, the runs of a preset, running or resuming them), `dpo` (federated DPO),
`report` (tables, plots, --merge, --report, the headline JSON), `rescore` (all TEST rows).
"""
