//! `train`: the kiln command line.
//!
//! ```text
//! train --recipe recipes/tinystories-tiny.yaml [--set train.max_steps=20]... [--out DIR] [--resume | --resume-from DIR]
//! train data --recipe R [--shard I/N | --tokenizer-only]   prepare data and tokenizer only
//! train export --checkpoint DIR --out DIR [--dtype f32|bf16]
//! train generate --model DIR --prompt "..." [--max-new-tokens N --temperature T --top-k K --top-p P --seed S]
//! train eval --model DIR --text FILE [--seq-len N]
//! train bench --recipe R [--set k=v]... [--backend B] [--steps N --warmup N --hf-config FILE]
//! ```

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use burn::prelude::Backend;
use clap::{Args, Parser, Subcommand, ValueEnum};
use kiln_arch::SafetensorsDtype;
use kiln_trainer::bench::BenchOptions;
use kiln_trainer::data_cmd::{run_data, DataMode};
use kiln_trainer::generate::{generate, SampleOptions};
use kiln_trainer::metrics::out_line;
use kiln_trainer::model_io::{self, export_model, load_model_dir};
use kiln_trainer::recipe::{BackendKind, Recipe};
use kiln_trainer::train::{self, TrainOptions};
use kiln_trainer::{eval, with_backend};

#[derive(Parser)]
#[command(
    name = "train",
    version,
    about = "Train small language models from a YAML recipe",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args)]
struct RunArgs {
    /// Recipe file (YAML); see recipes/README.md for every key.
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// Override a recipe key, e.g. --set train.max_steps=20 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    overrides: Vec<String>,
    /// Run directory (default: checkpoints/<recipe name>).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Continue from the run directory's newest checkpoint (refused if its files do not verify).
    #[arg(long)]
    resume: bool,
    /// Continue from this checkpoint (<run>/ckpt/step-N; the run directory is <run> unless --out
    /// says otherwise). The run's checkpoints after it are set aside, not deleted.
    #[arg(long, value_name = "DIR", conflicts_with = "resume")]
    resume_from: Option<PathBuf>,
    /// Backend (overrides train.backend).
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
}

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    Flex,
    Cuda,
    Wgpu,
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    F32,
    Bf16,
}

#[derive(Subcommand)]
enum Command {
    /// Prepare the recipe's data (tokenizer and shards) without training.
    Data {
        /// Recipe file (YAML); only its data and tokenizer sections are used.
        #[arg(long)]
        recipe: PathBuf,
        /// Override a recipe key, e.g. --set data.sources.0.max_documents=1000 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Worker I of N: prepare only every N-th input file (cluster array jobs); a final
        /// plain `train data` merges.
        #[arg(long, value_name = "I/N")]
        shard: Option<String>,
        /// Only prepare the tokenizer (run once before `--shard` workers).
        #[arg(long, conflicts_with = "shard")]
        tokenizer_only: bool,
    },
    /// Export a checkpoint (or a run directory's latest) as a Hugging Face model directory.
    Export {
        /// A checkpoint (<run>/ckpt/step-N) or a run directory (its newest checkpoint).
        #[arg(long, value_name = "DIR")]
        checkpoint: PathBuf,
        /// Directory to write: config.json, model.safetensors, generation_config.json and the
        /// tokenizer files, as transformers' from_pretrained reads them.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Weight dtype in model.safetensors.
        #[arg(long, value_enum, default_value = "f32")]
        dtype: DtypeArg,
        /// Write into --out even if it is a checkpoint, a run directory or another non-empty
        /// directory that is not an export (refused otherwise).
        #[arg(long)]
        force: bool,
        /// A model with LoRA adapters (a LoRA run's checkpoint, an adapter directory): merge them
        /// into the base weights and write a plain model directory. Without it, such a model is
        /// written as a PEFT adapter directory.
        #[arg(long)]
        merge_lora: bool,
    },
    /// Generate text from a model directory (export, checkpoint, run dir or Hugging Face Llama).
    Generate {
        /// An export, a checkpoint, a run directory (newest checkpoint) or a Hugging Face
        /// Llama/Mamba/Mamba-2/Jamba directory with tokenizer.json.
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        /// Text to continue.
        #[arg(long)]
        prompt: String,
        /// Tokens to generate at most (fewer if the model ends the text). Past the model's
        /// context, generation continues on a sliding window.
        #[arg(long, default_value_t = 200)]
        max_new_tokens: usize,
        /// Softmax temperature, a finite number >= 0; 0 = greedy.
        #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
        temperature: f64,
        /// Sample among the k most likely tokens only (0 = no top-k, as in transformers).
        #[arg(long)]
        top_k: Option<usize>,
        /// Sample among the most likely tokens whose probabilities reach p, in (0, 1].
        #[arg(long, allow_negative_numbers = true)]
        top_p: Option<f64>,
        /// Sampling seed (the same seed gives the same text).
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Time the recipe's training step on random tokens (one JSON line; see scripts/bench).
    Bench {
        /// Recipe file (YAML): its model and train sections set what is timed.
        #[arg(long)]
        recipe: PathBuf,
        /// Override a recipe key, e.g. --set train.seq_len=2048 (repeatable).
        #[arg(long = "set", value_name = "KEY=VALUE")]
        overrides: Vec<String>,
        /// Backend (overrides train.backend).
        #[arg(long, value_enum)]
        backend: Option<BackendArg>,
        /// Timed steps (the median is reported).
        #[arg(long, default_value_t = 8)]
        steps: usize,
        /// Untimed warm-up steps.
        #[arg(long, default_value_t = 2)]
        warmup: usize,
        /// Write the model's Hugging Face config.json here (for the PyTorch reference).
        #[arg(long)]
        hf_config: Option<PathBuf>,
    },
    /// Loss and perplexity of a model on a text file (one JSON line).
    Eval {
        /// Model directory, as for `generate`.
        #[arg(long, value_name = "DIR")]
        model: PathBuf,
        /// UTF-8 text file, tokenized with the model's tokenizer and cut into windows.
        #[arg(long, value_name = "FILE")]
        text: PathBuf,
        /// Window length (default: the model's context).
        #[arg(long)]
        seq_len: Option<usize>,
        /// Also write the first window's input_ids and logits to this safetensors file.
        #[arg(long)]
        dump_logits: Option<PathBuf>,
    },
}

/// mimalloc instead of glibc malloc: a training step frees and re-allocates the same large
/// activation buffers every step; glibc returns blocks over its mmap threshold to the OS and
/// page-faults them in again each time (measured: ~20% of a quickstart step). mimalloc keeps and
/// reuses them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (the 16th entry of `mi_option_e` in mimalloc.h, v2 and v3;
/// libmimalloc-sys 0.1 does not name it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    // Never give freed memory back to the OS: by default mimalloc purges after 10 ms, and the next
    // step page-faults the same buffers in again (measured on the quickstart: 21,870 → 656 page
    // faults, 17% less CPU time per run).
    // SAFETY: sets a process-wide allocator option; called before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
    if let Err(e) = real_main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        None => {
            let recipe_path = cli
                .run
                .recipe
                .context("missing --recipe (try: train --recipe recipes/tinystories-tiny.yaml)")?;
            let recipe = load_recipe(&recipe_path, &cli.run.overrides, cli.run.backend)?;
            kiln_trainer::signals::install();
            let backend = recipe.train.backend;
            let opts = TrainOptions {
                out_dir: cli.run.out,
                resume: cli.run.resume,
                resume_from: cli.run.resume_from,
            };
            let summary = with_backend!(backend, run_training(recipe, opts))?;
            if let Some(dir) = &summary.export_dir {
                out_line(&format!("exported to {}", dir.display()));
            }
            if let Some(sample) = &summary.sample {
                out_line(&format!("\n--- sample (greedy) ---\n{sample}\n"));
            }
            if let Some(signal) = summary.stop_signal {
                let status = kiln_trainer::signals::exit_status(signal);
                if status != 0 {
                    std::process::exit(status);
                }
            }
            Ok(())
        }
        Some(Command::Data {
            recipe,
            overrides,
            shard,
            tokenizer_only,
        }) => {
            let recipe = Recipe::load(&recipe, &overrides)?;
            let mode = match (shard, tokenizer_only) {
                (Some(arg), _) => DataMode::parse_shard(&arg)?,
                (None, true) => DataMode::TokenizerOnly,
                (None, false) => DataMode::All,
            };
            run_data(&recipe, mode)
        }
        Some(Command::Export {
            checkpoint,
            out,
            dtype,
            force,
            merge_lora,
        }) => {
            kiln_trainer::model_io::check_export_target(&out, force)?;
            let dtype = match dtype {
                DtypeArg::F32 => SafetensorsDtype::F32,
                DtypeArg::Bf16 => SafetensorsDtype::Bf16,
            };
            run_export::<burn::backend::Flex>(
                &checkpoint,
                &out,
                dtype,
                merge_lora,
                Default::default(),
            )
        }
        Some(Command::Generate {
            model,
            prompt,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            seed,
        }) => {
            let opts = SampleOptions {
                max_new_tokens,
                temperature,
                top_k,
                top_p,
                seed,
            }
            .validated()
            .map_err(anyhow::Error::msg)?;
            run_generate::<burn::backend::Flex>(&model, &prompt, &opts, Default::default())
        }
        Some(Command::Bench {
            recipe,
            overrides,
            backend,
            steps,
            warmup,
            hf_config,
        }) => {
            let recipe = load_recipe(&recipe, &overrides, backend)?;
            let opts = BenchOptions {
                steps,
                warmup,
                hf_config_out: hf_config,
            };
            let report = with_backend!(recipe.train.backend, run_bench(recipe, opts))?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Some(Command::Eval {
            model,
            text,
            seq_len,
            dump_logits,
        }) => {
            let device = Default::default();
            let loaded = load_model_dir::<burn::backend::Flex>(&model, &device)?;
            let result = eval::evaluate(&loaded, &text, seq_len, dump_logits.as_deref(), &device)?;
            println!("{}", serde_json::to_string(&result)?);
            Ok(())
        }
    }
}

/// Reads the recipe, applies `--backend`, checks the binary has that backend, and sizes the CPU
/// thread pools from `train.threads`.
fn load_recipe(path: &Path, overrides: &[String], backend: Option<BackendArg>) -> Result<Recipe> {
    let mut recipe = Recipe::load(path, overrides)?;
    if let Some(b) = backend {
        recipe.train.backend = match b {
            BackendArg::Flex => BackendKind::Flex,
            BackendArg::Cuda => BackendKind::Cuda,
            BackendArg::Wgpu => BackendKind::Wgpu,
        };
    }
    kiln_trainer::backend::available(recipe.train.backend).map_err(anyhow::Error::msg)?;
    set_threads(recipe.train.threads)?;
    Ok(recipe)
}

fn run_bench<B: Backend>(
    recipe: Recipe,
    opts: BenchOptions,
    device: B::Device,
) -> Result<kiln_trainer::bench::BenchReport> {
    kiln_trainer::bench::run::<B>(recipe, opts, device)
}

fn run_training<B: Backend>(
    recipe: Recipe,
    opts: TrainOptions,
    device: B::Device,
) -> Result<train::RunSummary> {
    train::run::<B>(recipe, opts, device)
}

fn run_export<B: Backend>(
    checkpoint: &Path,
    out: &Path,
    dtype: SafetensorsDtype,
    merge_lora: bool,
    device: B::Device,
) -> Result<()> {
    let loaded = load_model_dir::<B>(checkpoint, &device)?;
    let tokenizer = loaded.tokenizer()?;
    match (&loaded.adapter, merge_lora) {
        (Some(adapter), true) => {
            let tensors = model_io::merged_hf_tensors(&loaded.model, adapter)?;
            model_io::export_hf_tensors(tensors, &loaded.config, tokenizer, out, dtype)?;
        }
        (Some(adapter), false) => {
            for w in model_io::export_adapter(&loaded.model, adapter, tokenizer, out)? {
                eprintln!("warning: {w}");
            }
        }
        (None, true) => anyhow::bail!(
            "--merge-lora: {} carries no LoRA adapter",
            loaded.dir.display()
        ),
        (None, false) => export_model(&loaded.model, &loaded.config, tokenizer, out, dtype)?,
    }
    println!("exported {} to {}", loaded.dir.display(), out.display());
    Ok(())
}

fn run_generate<B: Backend>(
    model_dir: &Path,
    prompt: &str,
    opts: &SampleOptions,
    device: B::Device,
) -> Result<()> {
    let loaded = load_model_dir::<B>(model_dir, &device)?;
    let tokenizer = loaded.tokenizer()?;
    let eot = tokenizer.eot_id()?;
    let mut ids = vec![eot];
    ids.extend(tokenizer.encode(prompt)?);
    if let Some(context) = loaded.config.max_seq_len() {
        if ids.len() > context {
            kiln_trainer::metrics::log_line(&format!(
                "note: the prompt is {} tokens, more than the model's context of {context}: only its \
                 last {context} tokens are used",
                ids.len()
            ));
        } else if ids.len() + opts.max_new_tokens > context {
            kiln_trainer::metrics::log_line(&format!(
                "note: the prompt ({} tokens) + --max-new-tokens {} exceed the model's context of \
                 {context} tokens: beyond it, generation continues on a sliding window of the most \
                 recent tokens",
                ids.len(),
                opts.max_new_tokens
            ));
        }
    }
    let new = generate(
        &loaded.model,
        &loaded.config,
        &ids,
        opts,
        Some(eot),
        &device,
    );
    let new: Vec<u32> = new.into_iter().filter(|&t| t != eot).collect();
    println!("{prompt}{}", tokenizer.decode(&new)?);
    Ok(())
}

fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(n) = threads {
        let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
        if cores > 0 && n > cores {
            kiln_trainer::metrics::log_line(&format!(
                "warning: train.threads = {n} is more than the {cores} cores this process may use: \
                 the extra threads compete for them and make steps slower"
            ));
        }
        kiln_arch::layers::set_num_threads(n);
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .context("cannot configure the CPU thread pool (train.threads)")?;
    }
    Ok(())
}
