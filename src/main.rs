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
    /// Log level filter (also RUST_LOG), e.g. info, debug, rtvla=trace; `info,rtvla::store::commit=debug` adds a
    /// line per record the store writer appended (seq, event id, durable = written and fsynced).
    /// The default keeps tract's kernel-selection notes (e.g. its FMA-port probe) out of the user's way.
    #[arg(long, global = true, default_value = "info,tract_linalg=warn,tract_core=warn")]
    log: String,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the fixed-rate control loop on a board (default: drive the student in the built-in simulator).
    ///
    /// Ctrl-C ends the run cleanly (the report is still written); `kill -USR1 <pid>` records a manual snapshot
    /// (trigger "external") of the last seconds into the store.
    Drive(DriveArgs),
    /// Inspect the event store: list, verify every record, export to MCAP (Foxglove) or JSON.
    Store {
        #[command(subcommand)]
        cmd: StoreCmd,
    },
    /// Model checks on this machine: parity of tract against the exporter's reference outputs, tract latency.
    Model {
        #[command(subcommand)]
        cmd: ModelCmd,
    },
    /// Explain the stored events offline: the student's language branch (tract, KV cache) writes a commentary
    /// for every keyframe of every snapshot, from its visual features and that tick's speed, target points and plan.
    ///
    /// Prints one line per event; `--json FILE` writes a JSON array (id, commentary, keyframes, ...), `--html FILE`
    /// a self-contained report with the thumbnails and the speed/brake trace of each event, `--mcap FILE` the
    /// store as MCAP (Foxglove) with the commentary on a `/commentary` channel.
    Explain(ExplainArgs),
    /// What the running `rtvla drive`s are doing: ticking or not, ticks, deadline misses, fallbacks, last event,
    /// store use, model and version. Exit 0 when at least one drive is ticking, 1 otherwise (the deploy health
    /// check reads this).
    Status(StatusArgs),
    /// Cost figures of the loop's own work (the ARM ledger, `cargo xtask bench --arm`, counts their instructions).
    Bench {
        #[command(subcommand)]
        cmd: BenchCmd,
    },
    /// The closed-loop simulator: datasets, evaluation, replays.
    Sim {
        #[command(subcommand)]
        cmd: rtvla::sim::cli::SimCommand,
    },
}

#[derive(clap::Args)]
struct ExplainArgs {
    /// Event store directory (as written by `rtvla drive --store DIR`).
    dir: PathBuf,
    /// Language branch manifest (default: the bundled branch that reads the features of the driving model that
    /// wrote the snapshots, found in $RTVLA_HOME, beside the executable, its install prefix or the source checkout).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Also write the explanations as a JSON array.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Also write an HTML report (thumbnails, commentary, speed/brake plots).
    #[arg(long)]
    html: Option<PathBuf>,
    /// Also export the store to MCAP with the commentary on a `/commentary` channel (Foxglove's Log panel).
    #[arg(long)]
    mcap: Option<PathBuf>,
}

#[derive(Subcommand)]
enum StoreCmd {
    /// List the stored events (time, trigger, duration, size).
    Ls {
        dir: PathBuf,
        /// Print a JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Check every record (CRC, framing, snapshot decode); exit 1 on corruption, naming file and offset.
    Verify {
        dir: PathBuf,
        /// Print the findings as one JSON object (segments, records_ok, snapshots_ok, corrupt, torn_tail,
        /// not_segments) instead of text; the exit code is the same.
        #[arg(long)]
        json: bool,
    },
    /// Export the events: `--mcap FILE` (opens in Foxglove) and/or `--json FILE`.
    Export {
        dir: PathBuf,
        #[arg(long)]
        mcap: Option<PathBuf>,
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ModelCmd {
    /// Run the export's reference frames through this runtime's preprocess + tract and compare with the reference
    /// outputs (exit 1 if the max abs diff exceeds the vectors' tolerance). For a language branch manifest: its
    /// reference keyframe contexts, first-step logits and greedy sentences.
    Check {
        /// Model manifest (student, teacher or language).
        manifest: PathBuf,
        /// Reference vectors (default: <manifest stem>.parity.json beside the manifest).
        #[arg(long)]
        vectors: Option<PathBuf>,
        /// Also write the result as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Multiply-accumulates per inference of each model (tract's cost model: convolutions and matrix products).
    Macs {
        #[arg(required = true)]
        manifests: Vec<PathBuf>,
    },
    /// Tract latency of one or more models, measured round-robin in one run; ratios are to the first model.
    Bench {
        #[arg(required = true)]
        manifests: Vec<PathBuf>,
        /// Timed inferences per model.
        #[arg(long, default_value_t = 100)]
        iters: usize,
        /// Untimed warm-up inferences per model.
        #[arg(long, default_value_t = 5)]
        warmup: usize,
        /// Consecutive inferences of one model before switching to the next: 1 = strict round-robin (every
        /// inference starts after another model's, with its caches); e.g. 20 = each model warm, as a control loop
        /// runs it tick after tick (the models still alternate, so load changes hit all alike).
        #[arg(long, default_value_t = 1)]
        block: usize,
        /// Threads for tract's matrix products (the drive loop always runs one; more is for comparison).
        #[arg(long, default_value_t = 1)]
        threads: usize,
        /// Also write the rows as JSON.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// One whole tick without the inference call (preprocess of a frame of the board's camera size, controller,
    /// supervisor, event recorder), ITERS times: run twice with different --iters, the difference is per tick.
    Tick {
        /// Board profile: a path or a bundled board's name (its camera size and model manifest set the work).
        #[arg(long)]
        board: Option<PathBuf>,
        #[arg(long, default_value_t = 100)]
        iters: u64,
    },
    /// ITERS inferences of one model, untimed (the ARM ledger counts their instructions: run twice with different
    /// --iters, the difference is per inference).
    Infer {
        manifest: PathBuf,
        #[arg(long, default_value_t = 10)]
        iters: u64,
    },
}

#[derive(clap::Args)]
struct DriveArgs {
    /// Board profile: a path, or a bundled board's name (host-sim, qemu-virt, raspberry-pi-5, jetson-orin-nano).
    /// Default: the bundled host-sim (from $RTVLA_HOME, beside the executable, its install prefix or the source
    /// checkout — never the current directory).
    #[arg(long)]
    board: Option<PathBuf>,
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
    /// Sim boards: when the route ends, drive the next seed instead of stopping (soak runs with --ticks);
    /// the report's driving score is then the mean over the episodes.
    #[arg(long)]
    repeat: bool,
    /// Event store directory (default: the board's `store.path`; host-sim: a new directory per run under
    /// $XDG_STATE_HOME/rtvla/runs/, ~/.local/state by default, with `runs/latest` pointing at the newest).
    #[arg(long)]
    store: Option<PathBuf>,
    /// Do not record event snapshots.
    #[arg(long, conflicts_with = "store")]
    no_store: bool,
    /// Write the JSON run report here.
    #[arg(long)]
    report_json: Option<PathBuf>,
    /// Do not print the summary.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    // The origin of the cold start a drive reports (issue 21): before anything else runs.
    rtvla::runtime::mark_process_start();
    // SIGUSR1 asks a running `drive` for a manual snapshot; its default action is to kill the process. Until the
    // recorder takes it over, a request has nothing to record and must not end the process.
    let _ = signal_hook::flag::register(signal_hook::consts::SIGUSR1, Default::default());
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cli.log));
    // Colour codes only on a terminal: piped or captured logs stay plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_target(false)
        .init();
    let result = match cli.cmd {
        Cmd::Drive(a) => drive(a),
        Cmd::Store { cmd } => store(cmd),
        Cmd::Model { cmd } => model(cmd),
        Cmd::Explain(a) => explain(a),
        Cmd::Bench { cmd: BenchCmd::Tick { board, iters } } => bench_tick(board, iters),
        Cmd::Bench { cmd: BenchCmd::Infer { manifest, iters } } => bench_infer(&manifest, iters),
        Cmd::Sim { cmd } => rtvla::sim::cli::run(cmd),
        Cmd::Status(a) => status(a),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::from(exit_code(&e) as u8)
        }
    }
}

#[derive(clap::Args, Debug)]
struct StatusArgs {
    /// Directory of the drives' status sockets (default: $RTVLA_STATUS_DIR, $RUNTIME_DIRECTORY,
    /// $XDG_RUNTIME_DIR/rtvla, /tmp/rtvla-<uid>; a systemd unit's is /run/rtvla).
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// One JSON array of statuses on stdout.
    #[arg(long)]
    json: bool,
}

fn status(a: StatusArgs) -> anyhow::Result<i32> {
    use rtvla::runtime::status;
    let dir = a.dir.unwrap_or_else(status::status_dir);
    let all = status::query_all(&dir);
    let text = if a.json {
        serde_json::to_string_pretty(&all)? + "\n"
    } else if all.is_empty() {
        format!("no rtvla drive is running (no status socket answers in {})\n", dir.display())
    } else {
        all.iter().map(|s| s.render()).collect()
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
    Ok(if all.iter().any(|s| s.ticking) { 0 } else { 1 })
}

fn drive(a: DriveArgs) -> anyhow::Result<i32> {
    let mut o = DriveOptions::new(rtvla::bundle::board(a.board.as_deref())?);
    o.ticks = a.ticks;
    o.model = a.model;
    o.policy = a.policy;
    o.virtual_time = a.fast;
    // Used only when the board drives the in-process simulator.
    let run = rtvla::sim::plant::SimRun { scenario: a.scenario, seed: a.seed, repeat: a.repeat, observer: None };
    o.plant = Some(rtvla::sim::plant::factory(run, None));
    o.progress = !a.quiet;
    o.store = a.store;
    o.record_events = !a.no_store;
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
        if let Some(next) = report.next_step() {
            println!("{next}");
        }
    }
    Ok(0)
}

fn store(cmd: StoreCmd) -> anyhow::Result<i32> {
    use rtvla::store;
    match cmd {
        StoreCmd::Ls { dir, json } => {
            let (events, skipped) = store::ls_with_skipped(&dir)?;
            // The JSON array on stdout stays an array of events; the note about skipped records goes to stderr.
            let note = (!skipped.is_empty()).then(|| {
                format!(
                    "{} corrupt record(s) skipped (run `rtvla store verify {}` for files and offsets)",
                    skipped.len(),
                    dir.display()
                )
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&events)?);
                if let Some(n) = note {
                    eprintln!("{n}");
                }
            } else {
                store::print_table(&events, &mut std::io::stdout())?;
                if let Some(n) = note {
                    println!("{n}");
                }
            }
            Ok(0)
        }
        StoreCmd::Verify { dir, json } => {
            let report = store::verify(&dir)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.render());
            }
            Ok(if report.is_ok() { 0 } else { 1 })
        }
        StoreCmd::Export { dir, mcap, json } => {
            if mcap.is_none() && json.is_none() {
                return Err(rtvla::error::bad_input("store export: give --mcap FILE and/or --json FILE"));
            }
            if let Some(p) = mcap {
                let n = store::export_mcap(&dir, &p)?;
                println!("wrote {} ({n} messages)", p.display());
            }
            if let Some(p) = json {
                let n = store::export_json(&dir, &p)?;
                println!("wrote {} ({n} events)", p.display());
            }
            Ok(0)
        }
    }
}

fn explain(a: ExplainArgs) -> anyhow::Result<i32> {
    use rtvla::explain;
    let events = rtvla::store::ls(&a.dir)?.len();
    let manifest = match &a.model {
        Some(m) => m.clone(),
        None => explain::pick::language_for_store(&a.dir)?,
    };
    let branch = explain::LanguageBranch::load(&manifest)?;
    let bar = indicatif::ProgressBar::new(events as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template("explaining {bar:30} {pos}/{len} events, {eta} left")
            .expect("static template"),
    );
    let mut html = a.html.as_ref().map(|_| explain::report::HtmlReport::new());
    let (out, corrupt) = explain::explain_store(
        &a.dir,
        &branch,
        |e, s| {
            if let Some(h) = html.as_mut() {
                h.add(e, s);
            }
        },
        |n| bar.set_position(n as u64),
    )?;
    bar.finish_and_clear();
    print!("{}", explain::render_table(&out));
    let explained = out.iter().filter(|e| !e.commentary.is_empty()).count();
    println!("{explained} of {} events explained by {}", out.len(), branch.manifest().model.name);
    if corrupt > 0 {
        println!("{corrupt} corrupt records skipped (see `rtvla store verify`)");
    }
    if let Some(p) = &a.json {
        write_json(p, &out)?;
        println!("wrote {}", p.display());
    }
    if let Some(p) = &a.mcap {
        let by_seq: std::collections::HashMap<u64, Vec<(u64, String)>> =
            out.iter().map(|e| (e.seq, e.keyframes.iter().map(|k| (k.tick, k.commentary.clone())).collect())).collect();
        let lookup = |seq: u64| by_seq.get(&seq).cloned().unwrap_or_default();
        let n = rtvla::store::export::export_mcap_with_commentary(&a.dir, p, Some(&lookup))?;
        println!("wrote {} ({n} messages)", p.display());
    }
    if let (Some(p), Some(h)) = (&a.html, html) {
        let title = format!("rtvla events in {}", a.dir.display());
        std::fs::write(p, h.finish(&title, &branch.manifest().model.name))
            .map_err(|e| rtvla::error::bad_input(format!("{}: {e}", p.display())))?;
        println!("wrote {}", p.display());
    }
    Ok(0)
}

fn bench_tick(board: Option<PathBuf>, iters: u64) -> anyhow::Result<i32> {
    let r = rtvla::tick_cost::run(&rtvla::bundle::board(board.as_deref())?, iters)?;
    println!(
        "{}: {} ticks without inference ({}x{} frame -> {:?}), steer sum {:.4}",
        r.board, r.iters, r.frame[0], r.frame[1], r.model_input, r.checksum
    );
    Ok(0)
}

fn bench_infer(manifest: &std::path::Path, iters: u64) -> anyhow::Result<i32> {
    let sum = rtvla::tick_cost::infer_loop(manifest, iters)?;
    println!("{}: {iters} inferences, checksum {sum:.4}", manifest.display());
    Ok(0)
}

fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_string_pretty(value)? + "\n")
        .map_err(|e| rtvla::error::bad_input(format!("{}: {e}", path.display())))
}

fn model(cmd: ModelCmd) -> anyhow::Result<i32> {
    use rtvla::model::tools;
    match cmd {
        ModelCmd::Check { manifest, vectors, json } if rtvla::explain::language::is_language_manifest(&manifest) => {
            let r = rtvla::explain::language::check_parity(&manifest, vectors.as_deref())?;
            println!(
                "{} (language): {} keyframe contexts vs {}: max abs diff first-step logits {:.3e} (tolerance {:.1e}), \
                 same greedy sentence {}/{} -> {}",
                r.model,
                r.cases,
                r.reference,
                r.max_abs_diff_logits,
                r.tolerance,
                r.same_tokens,
                r.cases,
                if r.passed { "ok" } else { "FAILED" }
            );
            if let Some(p) = json {
                write_json(&p, &r)?;
            }
            Ok(if r.passed { 0 } else { 1 })
        }
        ModelCmd::Check { manifest, vectors, json } => {
            let r = tools::check(&manifest, vectors.as_deref())?;
            println!(
                "{} ({}): {} cases vs {}: max abs diff waypoints {:.3e} (tolerance {:.1e}), features {:.3e} ({:.1e}) -> {}",
                r.model,
                r.precision,
                r.cases,
                r.reference,
                r.max_abs_diff_waypoints,
                r.tolerance,
                r.max_abs_diff_features,
                r.features_tolerance,
                if r.passed { "ok" } else { "FAILED" }
            );
            if let Some(p) = json {
                write_json(&p, &r)?;
            }
            Ok(if r.passed { 0 } else { 1 })
        }
        ModelCmd::Macs { manifests } => {
            for m in manifests {
                println!("{}: {} MACs", m.display(), tools::macs(&m)?);
            }
            Ok(0)
        }
        ModelCmd::Bench { manifests, iters, warmup, block, threads, json } => {
            let bar = indicatif::ProgressBar::new((iters + warmup) as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} runs per model")
                    .expect("static template"),
            );
            bar.set_message("tract latency");
            let rows =
                tools::bench(&manifests, iters.max(1), warmup, block, threads, |i, _| bar.set_position(i as u64))?;
            bar.finish_and_clear();
            print!("{}", tools::render_bench(&rows));
            if let Some(p) = json {
                write_json(&p, &rows)?;
            }
            Ok(0)
        }
    }
}
