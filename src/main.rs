//! `rtvla` CLI: thin argument parsing over the library. Exit codes: 0 ok, 2 bad input, 1 runtime fault.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use rtvla::alloc_counter::CountingAlloc;
use rtvla::error::{exit_code, one_line};
use rtvla::runtime::{DriveOptions, PolicyKind};

#[global_allocator]
static ALLOC: CountingAlloc = CountingAlloc;

#[derive(Parser)]
#[command(name = "rtvla", version, about = "Real-time VLA driving runtime: drive, simulate, inspect", long_about = None)]
struct Cli {
    /// Log level filter (also RUST_LOG), e.g. info, debug, rtvla=trace.
    #[arg(long, global = true, default_value = "info")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the fixed-rate control loop on a board (default: drive the student in the built-in simulator).
    Drive(DriveArgs),
    /// The closed-loop simulator: datasets, evaluation, replays.
    Sim {
        #[command(subcommand)]
        cmd: rtvla::sim::cli::SimCommand,
    },
}

#[derive(clap::Args)]
struct DriveArgs {
    /// Board profile (camera, loop rate, model, vehicle link, store).
    #[arg(long, default_value = "boards/host-sim.toml")]
    board: PathBuf,
    /// Stop after this many ticks (default: until the route ends or Ctrl-C).
    #[arg(long)]
    ticks: Option<u64>,
    /// Simulator scenario (sim boards; default from the board profile).
    #[arg(long)]
    scenario: Option<String>,
    /// Simulator seed (sim boards; default from the board profile).
    #[arg(long)]
    seed: Option<u64>,
    /// Student manifest overriding the board's model.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Who produces the waypoints: the student model, or the simulator's privileged expert.
    #[arg(long, value_enum, default_value_t = PolicyKind::Model)]
    policy: PolicyKind,
    /// Run in simulated time as fast as possible (sim boards; deterministic evaluation).
    #[arg(long)]
    fast: bool,
    /// Write the JSON run report here.
    #[arg(long)]
    report_json: Option<PathBuf>,
    /// Do not print the summary.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    let result = match cli.cmd {
        Cmd::Drive(a) => drive(a),
        Cmd::Sim { cmd } => rtvla::sim::cli::run(cmd),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(exit_code(&e) as u8)
        }
    }
}

fn drive(a: DriveArgs) -> anyhow::Result<i32> {
    let mut o = DriveOptions::new(a.board);
    o.ticks = a.ticks;
    o.scenario = a.scenario;
    o.seed = a.seed;
    o.model = a.model;
    o.policy = a.policy;
    o.virtual_time = a.fast;
    o.progress = !a.quiet;
    // Open the report file before driving, so a bad path fails in a second, not after the run.
    let mut report_file = match &a.report_json {
        Some(p) => Some(
            std::fs::File::create(p)
                .map_err(|e| rtvla::error::bad_input(format!("--report-json {}: {e}", p.display())))?,
        ),
        None => None,
    };
    let report = rtvla::runtime::drive(&o)?;
    if let Some(f) = report_file.as_mut() {
        use std::io::Write;
        let json = serde_json::to_string_pretty(&report)?;
        f.write_all(json.as_bytes())
            .and_then(|_| f.write_all(b"\n"))
            .map_err(|e| anyhow::anyhow!("writing the report: {e}"))?;
    }
    if !a.quiet {
        print!("{}", report.summary());
    }
    Ok(0)
}
