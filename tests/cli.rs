//! End-to-end tests of the `train` binary on a tiny recipe: training, logs, checkpoints, exact resume
//! after SIGKILL, export/import, generation, evaluation, and the error paths users hit.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;

const TRAIN: &str = env!("CARGO_BIN_EXE_train");

/// A tiny Llama on ~40k tokens of synthetic stories: seconds per run.
fn tiny_recipe(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"name: tiny
model:
  arch: llama
  d_model: 48
  n_layers: 2
  n_heads: 4
  n_kv_heads: 2
  ffn_hidden: 96
  max_seq_len: 64
  norm_eps: 1.0e-5
  tie_embeddings: true
data:
  sources:
    - type: synthetic_stories
      tokens: 40000
      seed: 7
  val_fraction: 0.05
  cache_dir: {cache}
tokenizer:
  type: train_bpe
  vocab_size: 320
  sample_docs: 200
train:
  seed: 3
  max_steps: 30
  micro_batch_size: 4
  grad_accum_steps: 2
  seq_len: 32
  optimizer: {{type: adamw, lr: 1.0e-2, weight_decay: 0.1}}
  schedule: {{type: cosine, warmup_steps: 3, min_lr_ratio: 0.1}}
  log_every_steps: 1
eval:
  every_steps: 10
  batches: 2
  sample_max_new_tokens: 8
checkpoint:
  every_steps: 10
  keep_last: 0
export:
  sample_max_new_tokens: 16
{extra}"#,
        cache = dir.join("data-cache").display()
    );
    let path = dir.join("tiny.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn train(args: &[&str]) -> Output {
    Command::new(TRAIN)
        .args(args)
        .output()
        .expect("train binary runs")
}

fn ok(out: Output) -> Output {
    assert!(
        out.status.success(),
        "train failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn fails_with(out: Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr:\n{stderr}"
    );
    for n in needles {
        assert!(stderr.contains(n), "error should mention {n:?}:\n{stderr}");
    }
}

/// `train eval --model MODEL --text TEXT`'s JSON line.
fn eval_json(model: &Path, text: &Path) -> Value {
    let out = ok(train(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
    ]));
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap()
}

fn metrics(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// (step, loss) of the training lines.
fn losses(run: &Path) -> Vec<(u64, f64)> {
    metrics(run)
        .iter()
        .filter_map(|v| Some((v.get("step")?.as_u64()?, v.get("loss")?.as_f64()?)))
        .collect()
}

/// Waits (at most 300 s) until `ready()` holds while the child keeps running.
fn wait_while_running(child: &mut std::process::Child, what: &str, ready: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !ready() {
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "timed out waiting for {what}"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "run exited before {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// One finished 30-step run shared by the tests that only read it.
/// Runs `train args`, pauses it after `step` (test hook) and SIGKILLs it: no chance to clean up.
fn sigkill_after_step(args: &[&str], run: &Path, step: u64) {
    let mut child = Command::new(TRAIN)
        .args(args)
        .env("KILN_PAUSE_AFTER_STEP", step.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let marker = run.join(format!("paused-at-{step}"));
    wait_while_running(&mut child, &format!("step {step}"), || marker.exists());
    child.kill().unwrap();
    child.wait().unwrap();
}

fn shared_run() -> &'static (tempfile::TempDir, PathBuf) {
    static RUN: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let recipe = tiny_recipe(dir.path(), "");
        let run = dir.path().join("run");
        ok(train(&[
            "--recipe",
            recipe.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ]));
        (dir, run)
    })
}

#[test]
fn training_lowers_the_loss_and_writes_the_run_directory() {
    let (_, run) = shared_run();
    let l = losses(run);
    assert_eq!(l.len(), 30, "one training line per step");
    let first = l[0].1;
    let last = l[29].1;
    // Random init starts near ln(320) ≈ 5.77.
    assert!((first - 320f64.ln()).abs() < 0.5, "first loss {first}");
    assert!(last < first - 1.0, "loss should fall: {first} → {last}");

    let m = metrics(run);
    let line = m.iter().find(|v| v.get("loss").is_some()).unwrap();
    for key in [
        "step",
        "loss",
        "lr",
        "grad_norm",
        "tokens",
        "tokens_per_s",
        "mfu",
        "elapsed_s",
        "eta_s",
    ] {
        assert!(line.get(key).is_some(), "metrics line lacks {key}: {line}");
    }
    // 4 × 2 × 32 tokens per step.
    assert_eq!(line["tokens"].as_u64(), Some(256));
    let evals: Vec<&Value> = m.iter().filter(|v| v.get("val_loss").is_some()).collect();
    assert_eq!(
        evals
            .iter()
            .map(|v| v["step"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![10, 20, 30]
    );
    assert!(
        m.iter().any(|v| v.get("sample").is_some()),
        "samples are logged"
    );

    for f in [
        "recipe.yaml",
        "tokenizer.json",
        "ckpt/step-000010/state.json",
        "ckpt/step-000030/model.safetensors",
    ] {
        assert!(run.join(f).exists(), "{f} missing");
    }
    let tb: Vec<_> = std::fs::read_dir(run.join("tb")).unwrap().collect();
    assert!(!tb.is_empty(), "TensorBoard event file written");
    for f in [
        "model.safetensors",
        "config.json",
        "tokenizer.json",
        "generation_config.json",
    ] {
        assert!(run.join("export").join(f).is_file(), "export/{f} missing");
    }
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("export/config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["model_type"], "llama");
    assert_eq!(cfg["architectures"][0], "LlamaForCausalLM");
    assert_eq!(cfg["tie_word_embeddings"], true);
    assert_eq!(cfg["num_key_value_heads"], 2);
}

#[test]
fn resume_after_sigkill_gives_the_same_losses() {
    let (_, reference) = shared_run();
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path(), "");
    let run = dir.path().join("run");
    sigkill_after_step(
        &[
            "--recipe",
            recipe.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ],
        &run,
        13,
    );
    // Steps 11–13 were logged but not checkpointed; step 10 is the latest checkpoint.
    let out = ok(train(&[
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--resume",
    ]));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("step 10"),
        "resumed from step 10"
    );
    let resumed = losses(&run);
    let expected = losses(reference);
    assert_eq!(
        resumed.len(),
        30,
        "metrics.jsonl reads as one run: {resumed:?}"
    );
    for ((s1, a), (s2, b)) in resumed.iter().zip(&expected) {
        assert_eq!(s1, s2);
        assert!(
            (a - b).abs() <= 1e-5,
            "step {s1}: resumed {a} vs uninterrupted {b}"
        );
    }
}

#[test]
fn export_import_round_trip_has_identical_logits() {
    let (dir, run) = shared_run();
    let text = dir.path().join("eval.txt");
    std::fs::write(
        &text,
        "Once upon a time, a little cat named Tom found a red ball. He was very happy.",
    )
    .unwrap();
    let eval = |model: &Path, dump: &Path| -> Value {
        let out = ok(train(&[
            "eval",
            "--model",
            model.to_str().unwrap(),
            "--text",
            text.to_str().unwrap(),
            "--dump-logits",
            dump.to_str().unwrap(),
        ]));
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap()
    };
    let a = eval(&run.join("export"), &dir.path().join("a.safetensors"));
    let b = eval(
        &run.join("ckpt/step-000030"),
        &dir.path().join("b.safetensors"),
    );
    assert_eq!(a, b, "export and checkpoint give the same eval");
    let la = kiln_arch::read_safetensors(dir.path().join("a.safetensors")).unwrap();
    let lb = kiln_arch::read_safetensors(dir.path().join("b.safetensors")).unwrap();
    assert_eq!(la["logits"].data, lb["logits"].data, "identical logits");
    assert!(a["loss"].as_f64().unwrap() > 0.0 && a["tokens"].as_u64().unwrap() > 5);

    // `train export` of the run directory (latest checkpoint) in bf16 loads and evaluates close by.
    let bf16 = dir.path().join("export-bf16");
    ok(train(&[
        "export",
        "--checkpoint",
        run.to_str().unwrap(),
        "--out",
        bf16.to_str().unwrap(),
        "--dtype",
        "bf16",
    ]));
    let c = eval(&bf16, &dir.path().join("c.safetensors"));
    let (la, lc) = (a["loss"].as_f64().unwrap(), c["loss"].as_f64().unwrap());
    assert!((la - lc).abs() < 0.05, "bf16 export loss {lc} vs f32 {la}");
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(bf16.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["torch_dtype"], "bfloat16");
}

#[test]
fn init_from_an_export_continues_from_its_weights() {
    let (_, run) = shared_run();
    let dir = tempfile::tempdir().unwrap();
    let extra = format!("  init_from: {}\n", run.join("export").display());
    // `extra` lands after the export section: append init_from to the model section instead.
    let recipe = tiny_recipe(dir.path(), "");
    let text = std::fs::read_to_string(&recipe).unwrap().replace(
        "  max_seq_len: 64\n",
        &format!("  max_seq_len: 64\n{extra}"),
    );
    std::fs::write(&recipe, text).unwrap();
    let out_dir = dir.path().join("continued");
    ok(train(&[
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        out_dir.to_str().unwrap(),
        "--set",
        "train.max_steps=2",
        "--set",
        "export.enabled=false",
    ]));
    let first = losses(&out_dir)[0].1;
    let trained = losses(run)[29].1;
    assert!(
        first < trained + 0.5,
        "continued run starts near the trained loss ({first} vs {trained}), not from scratch"
    );
}

#[test]
fn generation_is_deterministic() {
    let (_, run) = shared_run();
    let export = run.join("export");
    let gen = |seed: &str, temp: &str| {
        let out = ok(train(&[
            "generate",
            "--model",
            export.to_str().unwrap(),
            "--prompt",
            "Once upon a time",
            "--max-new-tokens",
            "20",
            "--temperature",
            temp,
            "--top-k",
            "20",
            "--seed",
            seed,
        ]));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let greedy = gen("1", "0");
    assert!(
        greedy.starts_with("Once upon a time") && greedy.trim().len() > "Once upon a time".len()
    );
    assert_eq!(greedy, gen("2", "0"), "greedy ignores the seed");
    assert_eq!(
        gen("5", "1.0"),
        gen("5", "1.0"),
        "sampling is deterministic for a seed"
    );
    // A prompt beyond the context (64 tokens): a note says only its end is used.
    let out = ok(train(&[
        "generate",
        "--model",
        export.to_str().unwrap(),
        "--prompt",
        &"Once upon a time there was a dog. ".repeat(12),
        "--max-new-tokens",
        "40",
        "--temperature",
        "1.0",
        "--seed",
        "3",
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("only its last 64 tokens are used"),
        "{stderr}"
    );
    // (That it goes on past the context is `generate::tests::generation_slides_past_the_context`:
    // here a sampled end-of-text may stop it early.)
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Once upon a time"));
}

#[test]
fn recipe_errors_name_the_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path(), "");
    let r = recipe.to_str().unwrap();
    let text = std::fs::read_to_string(&recipe).unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        text.replace("  n_heads: 4\n", "  n_heads: 4\n  n_headz: 4\n"),
    )
    .unwrap();
    fails_with(
        train(&["--recipe", bad.to_str().unwrap()]),
        &["bad.yaml", "n_headz", "line"],
    );
    std::fs::write(&bad, text.replace("max_steps: 30", "max_steps: thirty")).unwrap();
    fails_with(
        train(&["--recipe", bad.to_str().unwrap()]),
        &["train.max_steps", "invalid type"],
    );
    fails_with(
        train(&["--recipe", r, "--set", "train.max_stepz=3"]),
        &["max_stepz"],
    );
    fails_with(
        train(&["--recipe", r, "--set", "train.seq_len=128"]),
        &["train.seq_len", "model.max_seq_len"],
    );
    fails_with(
        train(&["--recipe", &format!("{r}.missing")]),
        &["cannot read recipe", "missing"],
    );
}

#[test]
fn missing_backend_and_inputs_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path(), "");
    let r = recipe.to_str().unwrap();
    if !cfg!(feature = "cuda") {
        fails_with(
            train(&["--recipe", r, "--backend", "cuda"]),
            &["--features cuda"],
        );
    }
    let nowhere = dir.path().join("nowhere");
    fails_with(
        train(&[
            "--recipe",
            r,
            "--set",
            &format!("model.init_from={}", nowhere.display()),
        ]),
        &["model.init_from", "nowhere"],
    );
    fails_with(
        train(&[
            "generate",
            "--model",
            nowhere.to_str().unwrap(),
            "--prompt",
            "x",
        ]),
        &["does not exist"],
    );
}

#[test]
fn existing_run_needs_resume_and_corrupt_checkpoints_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path(), "");
    let r = recipe.to_str().unwrap();
    let run = dir.path().join("run");
    let o = run.to_str().unwrap();
    ok(train(&[
        "--recipe",
        r,
        "--out",
        o,
        "--set",
        "train.max_steps=10",
        "--set",
        "export.enabled=false",
    ]));
    fails_with(train(&["--recipe", r, "--out", o]), &["--resume"]);
    // Truncate the checkpoint's weights: resume must say which file is broken, and must not delete it.
    let weights = run.join("ckpt/step-000010/model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    fails_with(
        train(&[
            "--recipe",
            r,
            "--out",
            o,
            "--resume",
            "--set",
            "train.max_steps=20",
        ]),
        &["model.safetensors"],
    );
    assert!(
        weights.exists(),
        "a broken checkpoint is reported, never deleted"
    );
    // A changed architecture cannot resume from this run.
    std::fs::write(&weights, &bytes).unwrap();
    fails_with(
        train(&[
            "--recipe",
            r,
            "--out",
            o,
            "--resume",
            "--set",
            "model.n_layers=3",
        ]),
        &["model.n_layers"],
    );
    // An optional key the checkpoint's recipe does not set is named too, with both values.
    fails_with(
        train(&[
            "--recipe",
            r,
            "--out",
            o,
            "--resume",
            "--set",
            "model.rope_theta=500000",
        ]),
        &["model.rope_theta is not set", "500000.0 now"],
    );
}

/// Same-size bit rot in the newest checkpoint: `--resume` and `generate` name the damaged file and
/// the newest intact checkpoint, delete nothing, and `--resume-from` continues from the intact one
/// with the damaged one set aside. A resume past `max_steps` says so.
#[test]
fn damaged_newest_checkpoint_is_named_and_resume_from_continues() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path(), "");
    let r = recipe.to_str().unwrap();
    let run = dir.path().join("run");
    let o = run.to_str().unwrap();
    let steps = |n: &str| ["--set".to_string(), format!("train.max_steps={n}")];
    let args = |extra: &[&str], n: &str| -> Vec<String> {
        let mut v: Vec<String> = ["--recipe", r, "--set", "export.enabled=false"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v.extend(steps(n));
        v
    };
    let run_train = |a: Vec<String>| train(&a.iter().map(String::as_str).collect::<Vec<_>>());
    ok(run_train(args(&["--out", o], "20")));
    let weights = run.join("ckpt/step-000020/model.safetensors");
    let good = std::fs::read(&weights).unwrap();
    let mut rotten = good.clone();
    let middle = rotten.len() / 2;
    rotten[middle] ^= 0x04;
    std::fs::write(&weights, &rotten).unwrap();

    fails_with(
        run_train(args(&["--out", o, "--resume"], "30")),
        &[
            "step-000020 is damaged",
            "model.safetensors has xxh3",
            "--resume-from",
            "step-000010",
        ],
    );
    fails_with(
        train(&["generate", "--model", o, "--prompt", "Once"]),
        &["step-000020 is damaged", "step-000010"],
    );
    assert_eq!(
        std::fs::read(&weights).unwrap(),
        rotten,
        "nothing is deleted"
    );

    // A checkpoint directory without state.json is reported too, never skipped silently.
    std::fs::rename(
        run.join("ckpt/step-000020/state.json"),
        dir.path().join("state.json"),
    )
    .unwrap();
    fails_with(
        run_train(args(&["--out", o, "--resume"], "30")),
        &["state.json is missing", "step-000010"],
    );

    let from = run.join("ckpt/step-000010");
    let out = ok(run_train(args(
        &["--resume-from", from.to_str().unwrap()],
        "20",
    )));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("resumed from") && stderr.contains("(step 10)"),
        "{stderr}"
    );
    assert!(stderr.contains("set aside"), "{stderr}");
    assert!(run
        .join("ckpt/set-aside-step-000020/model.safetensors")
        .is_file());
    let ckpts: Vec<u64> = kiln_trainer::checkpoint::list(&run)
        .iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(ckpts, [10, 20]);
    kiln_trainer::checkpoint::verify(&run.join("ckpt/step-000020")).unwrap();

    fails_with(
        run_train(args(&["--out", o, "--resume"], "15")),
        &["at step 20, past this recipe's 15 steps", "train.max_steps"],
    );
}

/// `metrics.jsonl` on a full disk (`/dev/full`: every write fails with ENOSPC) and a TensorBoard
/// directory where no file can be created (`/sys`): each is one warning naming the path, and the
/// run trains to the end, checkpoints and exports. (Also: `train.threads` above the cores warns.)
#[cfg(target_os = "linux")]
#[test]
fn unwritable_logs_warn_with_their_path_and_training_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path(), "");
    let run = dir.path().join("run");
    std::fs::create_dir_all(&run).unwrap();
    std::os::unix::fs::symlink("/dev/full", run.join("metrics.jsonl")).unwrap();
    std::os::unix::fs::symlink("/sys", run.join("tb")).unwrap();
    let cores = std::thread::available_parallelism().unwrap().get();
    let out = ok(train(&[
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--set",
        "train.max_steps=12",
        "--set",
        &format!("train.threads={}", cores + 1),
    ]));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warned = |needle: &str| stderr.lines().filter(|l| l.contains(needle)).count();
    assert_eq!(
        warned("warning: cannot write"),
        1,
        "one warning while it keeps failing:\n{stderr}"
    );
    assert!(
        stderr.contains("metrics.jsonl") && stderr.contains("No space left on device"),
        "{stderr}"
    );
    assert_eq!(warned("writing TensorBoard events under"), 1, "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(
        stderr.contains(&format!("more than the {cores} cores")),
        "threads above the cores warn:\n{stderr}"
    );
    assert!(run.join("ckpt/step-000012/model.safetensors").is_file());
    assert!(run.join("export/model.safetensors").is_file());
}

#[test]
fn diverging_loss_stops_with_the_checkpoint_intact() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path(), "");
    let (r, run) = (recipe.to_str().unwrap(), dir.path().join("run"));
    let o = run.to_str().unwrap();
    let healthy = [
        "--set",
        "train.max_steps=10",
        "--set",
        "export.enabled=false",
    ];
    ok(train(
        &[&["--recipe", r, "--out", o][..], &healthy].concat(),
    ));
    let weights = run.join("ckpt/step-000010/model.safetensors");
    let before = std::fs::read(&weights).unwrap();
    // Continue with an absurd learning rate: the loss or the gradient becomes non-finite within
    // two steps.
    let exploding = [
        "--resume",
        "--set",
        "train.max_steps=30",
        "--set",
        "train.optimizer.lr=1.0e30",
        "--set",
        "train.grad_clip=null",
    ];
    fails_with(
        train(&[&["--recipe", r, "--out", o][..], &exploding].concat()),
        &["not finite", "step-000010", "has finite values"],
    );
    // The good checkpoint is untouched and no non-finite one was written.
    assert_eq!(std::fs::read(&weights).unwrap(), before);
    let ckpts = kiln_trainer::checkpoint::list(&run);
    assert_eq!(ckpts.iter().map(|c| c.0).collect::<Vec<_>>(), vec![10]);
}

/// Starts an endless tiny run, waits for three logged steps, sends `signal` with `kill` and
/// checks the stop: exit status `status`, stderr naming `name`, exactly one checkpoint, at the
/// step it stopped, and no export. Returns the recipe, the run directory and that step.
fn stop_by_signal(dir: &Path, signal: &str, status: i32, name: &str) -> (PathBuf, PathBuf, u64) {
    let recipe = tiny_recipe(dir, "");
    let run = dir.join("run");
    let mut child = Command::new(TRAIN)
        .args([
            "--recipe",
            recipe.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--set",
            "train.max_steps=1000000",
            "--set",
            "checkpoint.every_steps=0",
            "--set",
            "eval.every_steps=0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_while_running(&mut child, "three logged steps", || {
        run.join("metrics.jsonl").exists() && losses(&run).len() >= 3
    });
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(status), "{signal}:\n{stderr}");
    assert!(
        stderr.contains(&format!("{name}: finishing this step"))
            && stderr.contains(&format!("stopped by {name}")),
        "{signal}:\n{stderr}"
    );
    let ckpts = kiln_trainer::checkpoint::list(&run);
    assert_eq!(ckpts.len(), 1, "exactly the {signal} checkpoint: {ckpts:?}");
    let last_logged = losses(&run).last().unwrap().0;
    assert_eq!(
        ckpts[0].0, last_logged,
        "checkpoint at the step where it stopped"
    );
    assert!(
        !run.join("export").exists(),
        "a stopped run is not exported"
    );
    (recipe, run, last_logged)
}

#[test]
fn ctrl_c_writes_a_checkpoint_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (recipe, run, last_logged) = stop_by_signal(dir.path(), "INT", 0, "Ctrl-C");
    // And it resumes from there.
    let out = ok(train(&[
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--resume",
        "--set",
        &format!("train.max_steps={}", last_logged + 2),
        "--set",
        "checkpoint.every_steps=0",
        "--set",
        "eval.every_steps=0",
    ]));
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("step {last_logged}")));
    assert_eq!(losses(&run).last().unwrap().0, last_logged + 2);
}

/// SLURM (preemption, time limit), Kubernetes, `docker stop` and `timeout` send SIGTERM; a
/// closed terminal sends SIGHUP. Both stop like Ctrl-C, and the exit status says which.
#[test]
fn sigterm_and_sighup_write_a_checkpoint_and_exit_128_plus_signal() {
    for (signal, status) in [("TERM", 143), ("HUP", 129)] {
        let dir = tempfile::tempdir().unwrap();
        stop_by_signal(dir.path(), signal, status, &format!("SIG{signal}"));
    }
}

/// `train ... 2>&1 | head -3`: the reader goes away after three lines. Training must go on to the
/// end, with every metrics line, the checkpoint and the export written.
#[test]
fn closed_output_pipes_do_not_stop_training() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path(), "");
    let run = dir.path().join("run");
    let mut child = Command::new(TRAIN)
        .args([
            "--recipe",
            recipe.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Close stdout at once, and stderr after three lines.
    drop(child.stdout.take());
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    for _ in 0..3 {
        let mut line = String::new();
        stderr.read_line(&mut line).unwrap();
    }
    drop(stderr);
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(losses(&run).len(), 30, "every step in metrics.jsonl");
    assert!(run.join("export/model.safetensors").is_file());
    assert_eq!(kiln_trainer::checkpoint::list(&run).last().unwrap().0, 30);
}

/// `train export --out` never overwrites a checkpoint, a run directory or unrelated files
/// unless `--force`; an earlier export is replaced.
#[test]
fn export_refuses_to_overwrite_checkpoints_and_run_directories() {
    let (_, run) = shared_run();
    let dir = tempfile::tempdir().unwrap();
    // A copy of the run's last checkpoint, to aim at.
    let (_, ckpt) = kiln_trainer::checkpoint::list(run).pop().unwrap();
    let target = dir.path().join("ckpt-copy");
    std::fs::create_dir_all(&target).unwrap();
    for e in std::fs::read_dir(&ckpt).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), target.join(e.file_name())).unwrap();
    }
    let model_before = std::fs::read(target.join("model.safetensors")).unwrap();
    let export = |out: &Path, force: bool| {
        let mut args = vec![
            "export",
            "--checkpoint",
            ckpt.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ];
        if force {
            args.push("--force");
        }
        train(&args)
    };
    fails_with(
        export(&target, false),
        &["ckpt-copy", "checkpoint", "--force"],
    );
    assert_eq!(
        std::fs::read(target.join("model.safetensors")).unwrap(),
        model_before
    );
    assert!(target.join("state.json").is_file());
    fails_with(export(run, false), &["run directory", "--force"]);
    let other = dir.path().join("notes");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(other.join("todo.txt"), "keep me").unwrap();
    fails_with(export(&other, false), &["not empty", "todo.txt"]);
    // An empty directory, an earlier export, or --force are fine.
    let fresh = dir.path().join("fresh");
    ok(export(&fresh, false));
    ok(export(&fresh, false));
    ok(export(&other, true));
    assert!(other.join("model.safetensors").is_file() && other.join("todo.txt").is_file());
}

/// Sampling settings are checked and named; `--top-k 0` means no top-k, as in transformers.
#[test]
fn generate_checks_its_sampling_settings() {
    let (_, run) = shared_run();
    let export = run.join("export");
    let gen = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--model",
            export.to_str().unwrap(),
            "--prompt",
            "Once upon a time",
            "--max-new-tokens",
            "12",
            "--seed",
            "3",
        ];
        args.extend_from_slice(extra);
        train(&args)
    };
    fails_with(gen(&["--temperature", "-1"]), &["--temperature", "-1"]);
    fails_with(gen(&["--temperature", "NaN"]), &["--temperature"]);
    fails_with(gen(&["--top-p", "0"]), &["--top-p", "(0, 1]"]);
    fails_with(gen(&["--top-p", "1.5"]), &["--top-p"]);
    let no_top_k = ok(gen(&["--temperature", "1"])).stdout;
    assert_eq!(
        ok(gen(&["--temperature", "1", "--top-k", "0"])).stdout,
        no_top_k
    );
}

/// `train eval` of a model whose weights are not finite is an error, not `null` and status 0.
#[test]
fn eval_of_a_non_finite_model_is_an_error() {
    let (_, run) = shared_run();
    let dir = tempfile::tempdir().unwrap();
    let export = dir.path().join("export");
    std::fs::create_dir_all(&export).unwrap();
    for e in std::fs::read_dir(run.join("export")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), export.join(e.file_name())).unwrap();
    }
    let mut tensors: Vec<_> = kiln_arch::read_safetensors(export.join("model.safetensors"))
        .unwrap()
        .into_values()
        .collect();
    let norm = tensors
        .iter_mut()
        .find(|t| t.name == "model.norm.weight")
        .unwrap();
    norm.data[0] = f32::NAN;
    kiln_arch::write_safetensors(
        export.join("model.safetensors"),
        &tensors,
        kiln_arch::SafetensorsDtype::F32,
    )
    .unwrap();
    let text = dir.path().join("t.txt");
    std::fs::write(&text, "Once upon a time, a little cat found a red ball.").unwrap();
    let out = train(&[
        "eval",
        "--model",
        export.to_str().unwrap(),
        "--text",
        text.to_str().unwrap(),
    ]);
    fails_with(out, &["not finite", "export"]);
}

/// Every tensor of every safetensors file under `dir` (checkpoints, export) is finite.
fn assert_all_written_tensors_finite(dir: &Path) {
    let mut files = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "safetensors") {
                files += 1;
                for (name, t) in kiln_arch::read_safetensors(&p).unwrap() {
                    assert!(
                        t.data.iter().all(|x| x.is_finite()),
                        "{}: {name} is not finite",
                        p.display()
                    );
                }
            }
        }
    }
    assert!(files > 0, "no safetensors under {}", dir.display());
}

/// lr 1000 (the issue's repro): a step's gradient norm turns NaN while its loss is finite. No
/// checkpoint or export with a non-finite value may be written, whatever the policy.
#[test]
fn nonfinite_steps_never_reach_a_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path(), "");
    let run = |name: &str, policy: &str, keep_last: usize| {
        let out = dir.path().join(name);
        let result = train(&[
            "--recipe",
            recipe.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--set",
            "train.optimizer.lr=1000",
            "--set",
            "train.max_steps=40",
            "--set",
            "checkpoint.every_steps=1",
            "--set",
            &format!("checkpoint.keep_last={keep_last}"),
            "--set",
            &format!("train.on_nonfinite={policy}"),
        ]);
        (out, result)
    };
    // stop (the default): the run ends at the first non-finite step, naming it and the last
    // checkpoint, which is finite.
    // Pruning to 2 checkpoints keeps the last finite one.
    let (out, result) = run("stop", "stop", 2);
    let stderr = String::from_utf8_lossy(&result.stderr).to_string();
    fails_with(
        result,
        &[
            "not finite",
            "the update was not applied",
            "train.on_nonfinite",
        ],
    );
    assert!(stderr.contains("has finite values"), "{stderr}");
    assert!(!out.join("export").exists());
    assert_all_written_tensors_finite(&out);
    let kept = kiln_trainer::checkpoint::list(&out);
    assert!(!kept.is_empty() && kept.len() <= 2, "{kept:?}");
    kiln_trainer::checkpoint::verify(&kept.last().unwrap().1).unwrap();
    // skip_step: the bad steps are dropped and logged; the run goes on (or gives up after too
    // many in a row), and everything written stays finite.
    let (out, result) = run("skip", "skip_step", 100);
    let stderr = String::from_utf8_lossy(&result.stderr).to_string();
    assert!(
        stderr.contains("(train.on_nonfinite: skip_step)"),
        "{stderr}"
    );
    assert!(
        result.status.success() || stderr.contains("in a row"),
        "{stderr}"
    );
    assert_all_written_tensors_finite(&out);
}

/// Two processes on one run directory: the second is refused with the holder's PID; once the
/// holder is killed (its lock left behind), the next run takes the stale lock over and resumes.
#[test]
fn a_run_directory_is_locked_by_its_process() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path(), "");
    let run = dir.path().join("run");
    let args = [
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--resume",
        "--set",
        "checkpoint.every_steps=2",
    ];
    let mut holder = Command::new(TRAIN)
        .args(args)
        .env("KILN_PAUSE_AFTER_STEP", "4")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let marker = run.join("paused-at-4");
    wait_while_running(&mut holder, "step 4", || marker.exists());
    let lock = std::fs::read_to_string(run.join("lock")).unwrap();
    assert!(
        lock.starts_with(&format!("pid {} host ", holder.id())),
        "{lock}"
    );
    fails_with(
        train(&args),
        &[
            "in use by another training run",
            &format!("PID {}", holder.id()),
        ],
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    assert!(run.join("lock").exists(), "SIGKILL leaves the lock behind");
    let out = ok(train(&args));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("taking over") && stderr.contains("is gone"),
        "{stderr}"
    );
    assert!(stderr.contains("resumed from"), "{stderr}");
    assert!(!run.join("lock").exists(), "released at the end");
    assert_eq!(losses(&run).last().unwrap().0, 30);
}

#[test]
fn tokenizer_model_mismatch_is_refused() {
    let (_, run) = shared_run();
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path(), "");
    // The export's embedding has 320 rows; a 400-token tokenizer cannot feed it.
    let out = train(&[
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        dir.path().join("r").to_str().unwrap(),
        "--set",
        &format!("model.init_from={}", run.join("export").display()),
        "--set",
        "tokenizer.vocab_size=400",
    ]);
    fails_with(out, &["tokenizer", "vocab_size", "400", "320"]);
}

#[test]
fn data_command_prepares_without_training() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path(), "");
    let out = ok(train(&["data", "--recipe", recipe.to_str().unwrap()]));
    let v: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert!(v["train_tokens"].as_u64().unwrap() > 30_000);
    assert_eq!(v["vocab_size"].as_u64(), Some(320));
    let prepared = PathBuf::from(v["dir"].as_str().unwrap());
    assert!(prepared.join("tokenizer.json").is_file());
    assert!(prepared.join("report.txt").is_file());
    let stories = &v["sources"][0];
    assert_eq!(
        stories["name"], "synthetic_stories",
        "unnamed: named by type"
    );
    let source_dir = PathBuf::from(stories["dir"].as_str().unwrap());
    assert!(source_dir.join("u000000.train.000.bin").is_file());
    assert!(source_dir.join("u000000.val.000.bin").is_file());
    // A second run reuses what is there.
    let again = ok(train(&["data", "--recipe", recipe.to_str().unwrap()]));
    assert_eq!(again.stdout, out.stdout);
}

#[test]
fn data_command_needs_no_optimizer_schedule_or_length() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path(), "");
    let text = std::fs::read_to_string(&recipe).unwrap();
    let data_only: String = text
        .lines()
        .filter(|l| {
            !["  optimizer:", "  schedule:", "  max_steps:"]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(data_only, text);
    std::fs::write(&recipe, data_only).unwrap();
    let out = ok(train(&["data", "--recipe", recipe.to_str().unwrap()]));
    let v: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert!(v["train_tokens"].as_u64().unwrap() > 30_000);
    // Training names what it misses.
    let run = dir.path().join("run");
    let args = [
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ];
    fails_with(train(&args), &["train.optimizer", "missing"]);
    let with_optimizer = [
        &args[..],
        &["--set", "train.optimizer={type: adamw, lr: 0.01}"],
    ]
    .concat();
    fails_with(train(&with_optimizer), &["train.schedule", "missing"]);
    let with_schedule = [
        &with_optimizer[..],
        &["--set", "train.schedule={type: constant}"],
    ]
    .concat();
    fails_with(train(&with_schedule), &["train.max_steps"]);
    assert!(!run.join("ckpt").exists());
}

#[test]
fn bench_command_times_the_step_and_writes_the_hf_config() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path(), "");
    let config = dir.path().join("config.json");
    let out = ok(train(&[
        "bench",
        "--recipe",
        recipe.to_str().unwrap(),
        "--steps",
        "2",
        "--warmup",
        "1",
        "--hf-config",
        config.to_str().unwrap(),
    ]));
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON line");
    assert_eq!(report["framework"], "kiln");
    assert_eq!(report["backend"], "flex");
    assert_eq!(report["seq_len"], 32);
    assert_eq!(report["micro_batch_size"], 4);
    assert_eq!(report["grad_accum_steps"], 2);
    let tps = report["tokens_per_s"].as_f64().unwrap();
    let step_s = report["step_s"].as_f64().unwrap();
    assert!(
        (tps * step_s - 256.0).abs() < 1e-6 * tps,
        "tokens/s = 4 × 2 × 32 / step_s"
    );
    assert!(report["loss"].as_f64().unwrap().is_finite());
    assert_eq!(report["mem_kind"], "rss");
    assert!(report["peak_mem_mb"].as_f64().unwrap() > 1.0);
    // On CPU the peak for MFU is measured, so it is always there, and MFU is a fraction of it.
    let peak = report["peak_flops"].as_f64().expect("a measured CPU peak");
    assert!(peak > 1e8, "peak {peak}");
    let mfu = report["mfu"]
        .as_f64()
        .expect("mfu against the measured peak");
    assert!(mfu > 0.0 && mfu <= 1.0, "mfu {mfu}");
    let hf: Value = serde_json::from_str(&std::fs::read_to_string(&config).unwrap()).unwrap();
    assert_eq!(hf["model_type"], "llama");
    assert_eq!(hf["hidden_size"], 48);
    assert_eq!(
        hf["vocab_size"], 320,
        "the recipe's tokenizer size, untrained"
    );
}

#[test]
fn bf16_mixed_training_resumes_and_exports_f32_weights() {
    let (_, reference) = shared_run();
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path(), "");
    let run = dir.path().join("run");
    let args = [
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
        "--set",
        "train.precision=bf16-mixed",
    ];
    // Killed after step 12 (checkpoint at 10), then resumed: the reload must keep bf16-mixed.
    sigkill_after_step(&args, &run, 12);
    let mut resume = args.to_vec();
    resume.push("--resume");
    ok(train(&resume));
    let mixed = losses(&run);
    let expected = losses(reference);
    assert_eq!(mixed.len(), 30);
    // Same data order and init as the f32 reference run: the bf16-mixed losses stay close, and
    // are not identical (bf16 is really used).
    let mut max_rel = 0f64;
    for ((s, a), (_, b)) in mixed.iter().zip(&expected) {
        let rel = (a - b).abs() / b;
        assert!(rel < 0.03, "step {s}: bf16-mixed {a} vs f32 {b}");
        max_rel = max_rel.max(rel);
    }
    assert!(max_rel > 0.0, "bf16-mixed losses equal f32's bit for bit");
    // Master weights are f32: the export holds f32 tensors.
    let bytes = std::fs::read(run.join("export/model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let dtypes: Vec<&str> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| v["dtype"].as_str().unwrap())
        .collect();
    assert!(
        !dtypes.is_empty() && dtypes.iter().all(|d| *d == "F32"),
        "{dtypes:?}"
    );
}

/// `tiny_recipe` with two sources: the stories and a small JSONL file of train-timetable notes
/// (`notes.jsonl`, 60 lines), mixed 3:1 and then notes only from optimizer step 20 on.
fn mix_recipe(dir: &Path) -> PathBuf {
    let cities = ["Leeds", "York", "Bath", "Perth", "Derby", "Ely", "Truro"];
    let colours = ["red", "green", "blue", "grey", "yellow"];
    let notes: String = (0..60)
        .map(|i| {
            let line = format!(
                "Note {i}: the {} train to {} leaves platform {} at {} past {}. Passengers for {} \
                 change at {}, where the {} train waits for ten minutes.",
                colours[i % 5],
                cities[i % 7],
                i % 9 + 1,
                (i * 7) % 60,
                i % 12 + 1,
                cities[(i + 3) % 7],
                cities[(i + 5) % 7],
                colours[(i + 2) % 5],
            );
            serde_json::json!({ "text": line }).to_string() + "\n"
        })
        .collect();
    std::fs::write(dir.join("notes.jsonl"), notes).unwrap();
    let recipe = tiny_recipe(dir, "");
    let text = std::fs::read_to_string(&recipe).unwrap();
    let one_source =
        "  sources:\n    - type: synthetic_stories\n      tokens: 40000\n      seed: 7\n";
    let two_sources = format!(
        "  sources:
    - type: synthetic_stories
      name: stories
      tokens: 40000
      seed: 7
      weight: 0.75
    - type: jsonl
      name: notes
      paths: [{notes}]
      weight: 0.25
      val_fraction: 0.2
  stages:
    - from_step: 20
      weights: {{stories: 0, notes: 1}}
",
        notes = dir.join("notes.jsonl").display()
    );
    assert!(text.contains(one_source));
    std::fs::write(&recipe, text.replace(one_source, &two_sources)).unwrap();
    recipe
}

/// One finished 30-step run of `mix_recipe`, shared like [`shared_run`].
fn shared_mix_run() -> &'static (tempfile::TempDir, PathBuf, String) {
    static RUN: OnceLock<(tempfile::TempDir, PathBuf, String)> = OnceLock::new();
    RUN.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let recipe = mix_recipe(dir.path());
        let run = dir.path().join("run");
        let out = ok(train(&[
            "--recipe",
            recipe.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
        ]));
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        (dir, run, stderr)
    })
}

/// `tokens_by_source.<name>` of the training line at `step`.
fn source_tokens(lines: &[Value], step: u64, name: &str) -> u64 {
    let line = lines
        .iter()
        .find(|v| v.get("loss").is_some() && v["step"].as_u64() == Some(step))
        .unwrap_or_else(|| panic!("no training line for step {step}"));
    line["tokens_by_source"][name].as_u64().unwrap()
}

#[test]
fn a_two_source_mix_follows_its_weights_and_schedule() {
    let (_, run, stderr) = shared_mix_run();
    let lines = metrics(run);
    // Steps 1–20 draw 3:1 (160 rows of 32 tokens each, row by row at random).
    let stories = source_tokens(&lines, 20, "stories") as f64;
    let notes = source_tokens(&lines, 20, "notes") as f64;
    assert_eq!(stories + notes, 20.0 * 8.0 * 32.0);
    let share = notes / (stories + notes);
    assert!((0.15..0.35).contains(&share), "notes' share {share}");
    // From step 20 on only notes: the stories stop, the notes take every row.
    assert_eq!(source_tokens(&lines, 30, "stories") as f64, stories);
    assert_eq!(
        source_tokens(&lines, 30, "notes") as f64,
        notes + 10.0 * 8.0 * 32.0
    );
    // ~120 notes rows from ~70 windows: the notes were repeated, and the log says so.
    let last = lines.iter().rfind(|v| v.get("loss").is_some()).unwrap();
    assert_eq!(last["epochs_by_source"]["stories"].as_u64(), Some(0));
    assert!(last["epochs_by_source"]["notes"].as_u64().unwrap() >= 1);
    assert!(stderr.contains("source `notes` is in epoch 2"), "{stderr}");
    // Validation loss per source, and the mixed figure between them.
    let eval = lines.iter().rfind(|v| v.get("val_loss").is_some()).unwrap();
    let by_source = &eval["val_loss_by_source"];
    let (s, n) = (
        by_source["stories"].as_f64().unwrap(),
        by_source["notes"].as_f64().unwrap(),
    );
    let mixed = eval["val_loss"].as_f64().unwrap();
    // At step 30 the schedule weighs notes only.
    assert!(
        (mixed - n).abs() < 1e-9,
        "{mixed} vs notes {n}, stories {s}"
    );
    // Notes are 60 near-copies of one template: learned much better than the stories.
    assert!(n < s, "notes {n} vs stories {s}");
}

#[test]
fn resume_after_sigkill_continues_the_mix_exactly() {
    let (_, reference, _) = shared_mix_run();
    let dir = tempfile::tempdir().unwrap();
    let recipe = mix_recipe(dir.path());
    let run = dir.path().join("run");
    let args = [
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ];
    sigkill_after_step(&args, &run, 13);
    ok(train(&[&args[..], &["--resume"]].concat()));
    let resumed = metrics(&run);
    let expected = metrics(reference);
    for step in [11, 20, 21, 30] {
        for name in ["stories", "notes"] {
            assert_eq!(
                source_tokens(&resumed, step, name),
                source_tokens(&expected, step, name),
                "{name} at step {step}"
            );
        }
    }
    let (a, b) = (losses(&run), losses(reference));
    assert_eq!(a.len(), 30);
    for ((s1, x), (s2, y)) in a.iter().zip(&b) {
        assert_eq!(s1, s2);
        assert!((x - y).abs() <= 1e-5, "step {s1}: resumed {x} vs {y}");
    }
}

#[test]
fn data_command_explains_missing_web_text_and_bad_shard_arguments() {
    let dir = tempfile::tempdir().unwrap();
    let smollm = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../recipes/smollm-135m.yaml");
    let run_in_dir = |args: &[&str]| {
        Command::new(TRAIN)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = run_in_dir(&["data", "--recipe", smollm.to_str().unwrap()]);
    fails_with(
        out,
        &[
            "fineweb-edu",
            "data/fineweb-edu/sample/10BT/*.parquet",
            "huggingface-cli download HuggingFaceFW/fineweb-edu",
        ],
    );
    for bad in ["2/2", "x", "1/0"] {
        let out = run_in_dir(&["data", "--recipe", smollm.to_str().unwrap(), "--shard", bad]);
        fails_with(out, &[&format!("--shard {bad}"), "I/N"]);
    }
}

/// `tiny_recipe` with another model section (`model_block`: the lines under `model:`).
fn tiny_recipe_with_model(dir: &Path, model_block: &str) -> PathBuf {
    let recipe = tiny_recipe(dir, "");
    let text = std::fs::read_to_string(&recipe).unwrap();
    let llama = "  arch: llama\n  d_model: 48\n  n_layers: 2\n  n_heads: 4\n  n_kv_heads: 2\n  ffn_hidden: 96\n  max_seq_len: 64\n  norm_eps: 1.0e-5\n  tie_embeddings: true\n";
    assert!(text.contains(llama));
    std::fs::write(&recipe, text.replace(llama, model_block)).unwrap();
    recipe
}

// The state-space models use the shipped recipes' out_proj init (`scaled_residual_init`), which
// transformers must not re-apply at load.
const TINY_MAMBA: &str =
    "  arch: mamba\n  d_model: 48\n  n_layers: 2\n  state_size: 8\n  dt_rank: 4\n  init_std: 0.02\n  scaled_residual_init: true\n";
const TINY_MAMBA2: &str = "  arch: mamba2\n  d_model: 48\n  n_layers: 2\n  state_size: 8\n  head_dim: 24\n  n_groups: 1\n  chunk_size: 8\n  tie_embeddings: true\n  init_std: 0.02\n  scaled_residual_init: true\n";
const TINY_HYBRID: &str = "  arch: hybrid\n  d_model: 48\n  n_layers: 4\n  n_heads: 4\n  n_kv_heads: 2\n  ffn_hidden: 96\n  max_seq_len: 64\n  state_size: 8\n  dt_rank: 4\n  attn_every: 2\n  attn_offset: 1\n  norm_eps: 1.0e-5\n  tie_embeddings: true\n";

/// A tiny model of another architecture through the whole user path: training (loss falls),
/// export as `hf_class` (checked: `model_type`, one tensor's name and shape), export and
/// checkpoint evaluate identically, deterministic sampling with the recurrent/KV cache, exact
/// resume after SIGKILL, and `init_from` the export.
fn arch_end_to_end(model_block: &str, hf_class: &str, model_type: &str, tensor: (&str, &[usize])) {
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe_with_model(dir.path(), model_block);
    let run = dir.path().join("run");
    let args = [
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        run.to_str().unwrap(),
    ];
    ok(train(&args));
    let l = losses(&run);
    assert_eq!(l.len(), 30);
    let (first, last) = (l[0].1, l[29].1);
    assert!(
        last < first - 1.0,
        "{model_type}: loss falls: {first} -> {last}"
    );

    let export = run.join("export");
    let cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["model_type"], model_type);
    assert_eq!(cfg["architectures"][0], hf_class);
    // transformers re-runs this init rule on loaded weights (it divides every out_proj.weight
    // by sqrt(num_hidden_layers)): an export must never ask for it.
    assert_ne!(cfg["rescale_prenorm_residual"], true, "{model_type}");
    let tensors = kiln_arch::read_safetensors(export.join("model.safetensors")).unwrap();
    assert_eq!(tensors[tensor.0].shape, tensor.1.to_vec(), "{}", tensor.0);

    let text = dir.path().join("eval.txt");
    std::fs::write(
        &text,
        "Once upon a time, a little cat named Tom found a red ball.",
    )
    .unwrap();
    let eval = |model: &Path| eval_json(model, &text);
    assert_eq!(eval(&export), eval(&run.join("ckpt/step-000030")));
    let gen = |seed: &str| {
        let out = ok(train(&[
            "generate",
            "--model",
            export.to_str().unwrap(),
            "--prompt",
            "Once upon a time",
            "--max-new-tokens",
            "12",
            "--temperature",
            "1.0",
            "--seed",
            seed,
        ]));
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let sample = gen("4");
    assert!(
        sample.starts_with("Once upon a time") && sample.len() > 20,
        "{sample}"
    );
    assert_eq!(sample, gen("4"));

    let resumed = dir.path().join("resumed");
    let args2 = [
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        resumed.to_str().unwrap(),
    ];
    sigkill_after_step(&args2, &resumed, 13);
    ok(train(&[&args2[..], &["--resume"]].concat()));
    for ((s1, a), (s2, b)) in losses(&resumed).iter().zip(&l) {
        assert_eq!(s1, s2);
        assert!(
            (a - b).abs() <= 1e-5,
            "{model_type} step {s1}: resumed {a} vs {b}"
        );
    }

    let cont = dir.path().join("continued");
    ok(train(&[
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        cont.to_str().unwrap(),
        "--set",
        &format!("model.init_from={}", export.display()),
        "--set",
        "train.max_steps=2",
        "--set",
        "export.enabled=false",
    ]));
    assert!(
        losses(&cont)[0].1 < last + 0.5,
        "{model_type}: starts near the trained loss"
    );
}

#[test]
fn a_tiny_mamba_trains_exports_reloads_and_generates() {
    arch_end_to_end(
        TINY_MAMBA,
        "MambaForCausalLM",
        "mamba",
        ("backbone.layers.1.mixer.A_log", &[96, 8]),
    );
}

#[test]
fn a_tiny_mamba2_trains_exports_reloads_and_generates() {
    arch_end_to_end(
        TINY_MAMBA2,
        "Mamba2ForCausalLM",
        "mamba2",
        ("backbone.layers.1.mixer.A_log", &[4]),
    );
}

#[test]
fn a_tiny_hybrid_trains_exports_reloads_and_generates() {
    // Layers M A M A: attention at odd layers.
    arch_end_to_end(
        TINY_HYBRID,
        "JambaForCausalLM",
        "jamba",
        ("model.layers.1.self_attn.k_proj.weight", &[24, 48]),
    );
}

#[test]
fn mamba_recipe_errors_name_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe_with_model(dir.path(), TINY_MAMBA);
    let r = recipe.to_str().unwrap();
    fails_with(
        train(&["--recipe", r, "--set", "model.n_heads=4"]),
        &["model.n_heads", "does not apply", "arch mamba"],
    );
    fails_with(
        train(&["--recipe", r, "--set", "model.state_size=0"]),
        &["model", "state_size"],
    );
    fails_with(
        train(&["--recipe", r, "--set", "model.arch=llama"]),
        &["model.n_heads", "required"],
    );
    fails_with(
        train(&["--recipe", r, "--set", "model.arch=hybrid"]),
        &["model.n_heads", "required", "arch hybrid"],
    );
    fails_with(
        train(&["--recipe", r, "--set", "model.arch=mamba2"]),
        &["model.dt_rank", "does not apply", "arch mamba2"],
    );
    let hybrid = tiny_recipe_with_model(dir.path(), TINY_HYBRID);
    fails_with(
        train(&[
            "--recipe",
            hybrid.to_str().unwrap(),
            "--set",
            "model.attn_offset=2",
        ]),
        &["model.attn_offset", "model.attn_every 2"],
    );
}

#[test]
fn state_space_models_train_in_bf16_mixed_close_to_f32() {
    for model in [TINY_MAMBA, TINY_MAMBA2, TINY_HYBRID] {
        let dir = tempfile::tempdir().unwrap();
        let recipe = tiny_recipe_with_model(dir.path(), model);
        let run = |precision: &str| {
            let out = dir.path().join(precision);
            ok(train(&[
                "--recipe",
                recipe.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--set",
                &format!("train.precision={precision}"),
                "--set",
                "export.enabled=false",
            ]));
            losses(&out)
        };
        let (f32_losses, mixed) = (run("f32"), run("bf16-mixed"));
        assert_eq!(mixed.len(), 30);
        let mut max_rel = 0f64;
        for ((s, a), (_, b)) in mixed.iter().zip(&f32_losses) {
            let rel = (a - b).abs() / b;
            assert!(rel < 0.05, "{model}: step {s}: bf16-mixed {a} vs f32 {b}");
            max_rel = max_rel.max(rel);
        }
        assert!(
            max_rel > 0.0,
            "{model}: bf16-mixed losses equal f32's bit for bit"
        );
    }
}

#[test]
fn state_space_models_train_identically_with_activation_checkpointing() {
    for model in [TINY_MAMBA, TINY_MAMBA2, TINY_HYBRID] {
        let dir = tempfile::tempdir().unwrap();
        let recipe = tiny_recipe_with_model(dir.path(), model);
        let run = |checkpointing: bool| {
            let out = dir.path().join(format!("ckpt-{checkpointing}"));
            ok(train(&[
                "--recipe",
                recipe.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--set",
                &format!("train.activation_checkpointing={checkpointing}"),
                "--set",
                "train.max_steps=10",
                "--set",
                "export.enabled=false",
            ]));
            losses(&out)
        };
        let (plain, checkpointed) = (run(false), run(true));
        assert_eq!(checkpointed.len(), 10);
        for ((s, a), (_, b)) in checkpointed.iter().zip(&plain) {
            assert!((a - b).abs() <= 1e-5 * b, "{model}: step {s}: {a} vs {b}");
        }
    }
}

/// Every file under `dir` whose name ends with `suffix`.
fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_ending(&path, suffix));
        } else if path.to_string_lossy().ends_with(suffix) {
            out.push(path);
        }
    }
    out
}

/// `data.document_masking: true` trains on the same windows with each window's documents kept
/// apart: the losses (same init, same batches as the unmasked reference run) move a little once
/// a window holds a document start (a story is a few hundred tokens, a window 32), validation
/// runs masked too, and a missing document index is an error naming it.
#[test]
fn document_masking_keeps_the_documents_of_a_window_apart() {
    let (_, reference) = shared_run();
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path(), "");
    let run = dir.path().join("run");
    let args = |run: &Path| {
        vec![
            "--recipe".to_string(),
            recipe.to_str().unwrap().to_string(),
            "--out".to_string(),
            run.to_str().unwrap().to_string(),
            "--set".to_string(),
            "data.document_masking=true".to_string(),
            "--set".to_string(),
            "train.max_steps=10".to_string(),
        ]
    };
    let out = ok(Command::new(TRAIN).args(args(&run)).output().unwrap());
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("document masking on"), "{log}");
    let (masked, plain) = (losses(&run), losses(reference));
    assert_eq!(masked.len(), 10);
    let rel: Vec<f64> = masked
        .iter()
        .zip(plain)
        .map(|((_, a), (_, b))| (a - b).abs() / b)
        .collect();
    assert!(
        rel.iter().any(|&r| r > 1e-5) && rel.iter().all(|&r| r < 0.05),
        "masked vs unmasked losses, relative differences per step: {rel:?}"
    );
    let evals = metrics(&run)
        .iter()
        .filter(|v| v.get("val_loss").is_some())
        .count();
    assert!(evals > 0, "validation ran");

    for idx in files_ending(&dir.path().join("data-cache"), ".idx") {
        std::fs::remove_file(idx).unwrap();
    }
    let out = Command::new(TRAIN)
        .args(args(&dir.path().join("run2")))
        .output()
        .unwrap();
    fails_with(out, &[".idx", "document_masking"]);
}

/// A LoRA run (`lora:` section, `model.init_from` a kiln export): only the adapters train,
/// checkpoints hold the adapters and the base's digest, a SIGKILLed run resumes to the same
/// losses bit for bit, resuming against a changed base is refused, `export/` is a PEFT adapter
/// directory that `train eval` reads as the checkpoint, and `train export --merge-lora` writes a
/// plain model with the same loss whose untouched tensors are the base's. `target_modules` that
/// match nothing list the layers that exist.
#[test]
fn lora_trains_only_the_adapters_and_exports_a_peft_adapter() {
    let (_, reference) = shared_run();
    let dir = tempfile::tempdir().unwrap();
    // A copy of the reference export as the base (this test changes it at the end).
    let base = dir.path().join("base");
    std::fs::create_dir(&base).unwrap();
    for f in std::fs::read_dir(reference.join("export")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, base.join(f.file_name().unwrap())).unwrap();
    }
    let lora = "lora: {r: 4, alpha: 8, target_modules: all-linear}\n";
    let recipe = tiny_recipe(dir.path(), lora);
    let init = format!("model.init_from={}", base.display());
    let args = |run: &Path| -> Vec<String> {
        [
            "--recipe",
            recipe.to_str().unwrap(),
            "--out",
            run.to_str().unwrap(),
            "--set",
            &init,
            "--set",
            "train.max_steps=10",
            "--set",
            "checkpoint.every_steps=5",
        ]
        .map(String::from)
        .to_vec()
    };
    let run = dir.path().join("run");
    let out = ok(Command::new(TRAIN).args(args(&run)).output().unwrap());
    let log =
        String::from_utf8_lossy(&out.stderr).to_string() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        log.contains("trainable in LoRA adapters (r 4) on 14 of 14 linear layers"),
        "{log}"
    );
    let l = losses(&run);
    assert!(
        l.last().unwrap().1 < l[0].1,
        "LoRA loss did not fall: {l:?}"
    );

    // Checkpoints: the 28 adapter factors (trained: B moved from 0) and base.json.
    let ckpt_dir = run.join("ckpt/step-000010");
    let ckpt = kiln_arch::read_safetensors(ckpt_dir.join("model.safetensors")).unwrap();
    assert_eq!(ckpt.len(), 28);
    assert!(
        ckpt.keys().all(|k| k.contains(".lora.")),
        "{:?}",
        ckpt.keys()
    );
    let b = &ckpt["layers.1.self_attn.q_proj.lora.lora_b"];
    assert!(b.data.iter().any(|&v| v != 0.0), "the adapters trained");
    assert!(ckpt_dir.join("base.json").is_file());

    // SIGKILL after step 7, resume from step 5: the same losses bit for bit.
    let killed = dir.path().join("killed");
    let killed_args = args(&killed);
    let as_str: Vec<&str> = killed_args.iter().map(String::as_str).collect();
    sigkill_after_step(&as_str, &killed, 7);
    let mut resume = as_str.clone();
    resume.push("--resume");
    ok(train(&resume));
    assert_eq!(losses(&killed), l, "resumed LoRA run");

    // export/ is a PEFT adapter directory.
    let export = run.join("export");
    assert!(!export.join("model.safetensors").exists());
    let config: Value =
        serde_json::from_str(&std::fs::read_to_string(export.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(config["peft_type"], "LORA");
    assert_eq!(config["r"], 4);
    assert_eq!(config["lora_alpha"], 8.0);
    assert_eq!(
        config["base_model_name_or_path"],
        std::fs::canonicalize(&base).unwrap().display().to_string()
    );
    assert_eq!(config["target_modules"].as_array().unwrap().len(), 14);
    let adapter = kiln_arch::read_safetensors(export.join("adapter_model.safetensors")).unwrap();
    let a = &adapter["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"];
    assert_eq!(a.shape, vec![4, 48]);
    assert_eq!(adapter.len(), 28);

    // `train eval` reads the adapter directory (base + PEFT adapter) and the LoRA checkpoint
    // (adapters + the base it names) as the same model; the base alone differs.
    let text = dir.path().join("text.txt");
    std::fs::write(
        &text,
        "Once upon a time there was a little dog. He liked to run in the park.",
    )
    .unwrap();
    let eval = |model: &Path| eval_json(model, &text)["loss"].as_f64().unwrap();
    let (adapted, checkpointed, plain) = (eval(&export), eval(&ckpt_dir), eval(&base));
    assert!(
        (adapted - checkpointed).abs() < 1e-5,
        "{adapted} vs {checkpointed}"
    );
    assert!(
        (adapted - plain).abs() > 1e-4,
        "the adapter changes the model"
    );

    // `train export` of the LoRA checkpoint: a PEFT directory by default, a plain model with
    // --merge-lora (W + scale·BA), which evaluates as the adapted model; the tensors no adapter
    // touches are the base's.
    let (peft_dir, merged_dir) = (dir.path().join("peft"), dir.path().join("merged"));
    let export_args = |checkpoint: &Path, out: &Path, merge: bool| {
        let mut a = vec![
            "export".to_string(),
            "--checkpoint".to_string(),
            checkpoint.to_str().unwrap().to_string(),
            "--out".to_string(),
            out.to_str().unwrap().to_string(),
        ];
        if merge {
            a.push("--merge-lora".to_string());
        }
        Command::new(TRAIN).args(a).output().unwrap()
    };
    ok(export_args(&ckpt_dir, &peft_dir, false));
    assert_eq!(
        std::fs::read(peft_dir.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(export.join("adapter_model.safetensors")).unwrap()
    );
    ok(export_args(&ckpt_dir, &merged_dir, true));
    assert!(!merged_dir.join("adapter_config.json").exists());
    let merged = eval(&merged_dir);
    assert!(
        (merged - adapted).abs() < 1e-5,
        "merged {merged} vs adapted {adapted}"
    );
    let merged_t = kiln_arch::read_safetensors(merged_dir.join("model.safetensors")).unwrap();
    let base_t = kiln_arch::read_safetensors(base.join("model.safetensors")).unwrap();
    for name in [
        "model.embed_tokens.weight",
        "model.layers.1.input_layernorm.weight",
    ] {
        assert_eq!(merged_t[name], base_t[name], "{name}");
    }
    let q = "model.layers.1.self_attn.q_proj.weight";
    assert_ne!(merged_t[q], base_t[q], "the adapter is merged into {q}");
    fails_with(
        export_args(
            &reference.join("ckpt/step-000030"),
            &dir.path().join("x"),
            true,
        ),
        &["--merge-lora", "no LoRA adapter"],
    );

    // Continuing the adapter: `model.init_from` = the PEFT directory. Training starts from the
    // trained adapter (the first batch's loss is below the fresh adapter's), and the new export
    // names the same base, not the adapter it continued.
    let cont = dir.path().join("continued");
    let cont_init = format!("model.init_from={}", export.display());
    ok(train(&[
        "--recipe",
        recipe.to_str().unwrap(),
        "--out",
        cont.to_str().unwrap(),
        "--set",
        &cont_init,
        "--set",
        "train.max_steps=3",
    ]));
    assert!(
        losses(&cont)[0].1 < l[0].1,
        "{:?} vs {:?}",
        losses(&cont),
        l
    );
    let cont_config: Value = serde_json::from_str(
        &std::fs::read_to_string(cont.join("export/adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        cont_config["base_model_name_or_path"],
        config["base_model_name_or_path"]
    );
    let continued = eval(&cont.join("export"));
    assert!(continued.is_finite() && (continued - plain).abs() > 1e-4);

    // A changed base: resuming (and evaluating the checkpoint) is refused, naming it.
    let mut weights = base_t.clone();
    let norm = weights.get_mut("model.norm.weight").unwrap();
    norm.data[0] += 0.5;
    let changed: Vec<_> = weights.into_values().collect();
    kiln_arch::write_safetensors(
        base.join("model.safetensors"),
        &changed,
        kiln_arch::SafetensorsDtype::F32,
    )
    .unwrap();
    let mut more = args(&run);
    more.extend(["--resume", "--set", "train.max_steps=12"].map(String::from));
    fails_with(
        Command::new(TRAIN).args(&more).output().unwrap(),
        &["different base", "base"],
    );

    // Targets that match nothing are named, with the layers that exist.
    let bad = tiny_recipe(
        dir.path(),
        "lora: {r: 4, alpha: 8, target_modules: [qkv_proj]}\n",
    );
    fails_with(
        train(&[
            "--recipe",
            bad.to_str().unwrap(),
            "--out",
            dir.path().join("run-bad").to_str().unwrap(),
            "--set",
            &init,
        ]),
        &["lora.target_modules", "qkv_proj", "q_proj", "down_proj"],
    );
}
