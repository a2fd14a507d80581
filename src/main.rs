use clap::Parser;

#[derive(Parser)]
#[command(
    name = "rtvla",
    version,
    about = "Edge runtime for a distilled real-time VLA driving model"
)]
enum Cli {
    /// Closed-loop driving simulator.
    Sim {
        #[command(subcommand)]
        cmd: rtvla::sim::cli::SimCommand,
    },
}

fn main() {
    let code = match Cli::parse() {
        Cli::Sim { cmd } => match rtvla::sim::cli::run(cmd) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("error: {e:#}");
                1
            }
        },
    };
    std::process::exit(code);
}
