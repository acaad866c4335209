//! `segnode model check DIR`: the first command a team runs when bringing a model
//! (segmenter::check does the work; this prints it).

use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct ModelArgs {
    #[command(subcommand)]
    pub command: ModelCommand,
}

#[derive(Subcommand, Debug)]
pub enum ModelCommand {
    /// Check a model folder: manifest, ONNX checksum, opset and operators, shapes, one synthetic
    /// input through tract; prints the time and memory per study.
    Check(CheckArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Model folder holding model.toml (or the model.toml itself).
    pub dir: PathBuf,
    /// Synthetic runs to time (the median is reported).
    #[arg(long, default_value_t = 3)]
    pub runs: usize,
}

/// Peak resident set size of this process so far (Linux: VmHWM), in bytes.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn run(args: ModelArgs) -> Result<()> {
    match args.command {
        ModelCommand::Check(a) => check(a),
    }
}

fn check(a: CheckArgs) -> Result<()> {
    let runs = a.runs.clamp(1, 1000);
    let r = segmenter::check::check(&a.dir, runs)?;
    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!("model      {} {} ({})", r.name, r.version, r.kind);
    println!("onnx       sha256 {} (matches the manifest)", r.onnx_sha256);
    println!(
        "graph      opset {}, {} parameters, ops: {}",
        r.graph.opset,
        r.graph.parameters,
        r.graph
            .ops
            .iter()
            .map(|(op, n)| format!("{op} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "shapes     input {:?} {:?}, output {:?} {:?} (fixed, as the manifest says)",
        r.graph.input.0, r.graph.input.1, r.graph.output.0, r.graph.output.1
    );
    println!(
        "tract      loaded and optimised in {:.2} s",
        r.load.as_secs_f64()
    );
    println!(
        "run        {:.1} ms per network run (median of {}, one thread, synthetic input)",
        r.run.as_secs_f64() * 1000.0,
        r.runs_measured
    );
    println!(
        "per study  {:.1} s of inference for {} ({} runs, one thread; brain extraction not included)",
        r.per_study.as_secs_f64(),
        r.study,
        r.runs_per_study
    );
    match peak_rss() {
        Some(b) => println!(
            "memory     peak RSS of this check {:.0} MiB; a study of that size adds {:.0} MiB of model-grid arrays",
            mib(b),
            mib(r.study_arrays_bytes as u64)
        ),
        None => println!(
            "memory     a study of that size needs {:.0} MiB of model-grid arrays (peak RSS not readable here)",
            mib(r.study_arrays_bytes as u64)
        ),
    }
    println!("ok");
    Ok(())
}
