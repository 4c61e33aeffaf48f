//! The `ddb-audit` binary: parses the command line, sets up logging, runs
//! the command (`cli`) on a tokio runtime and turns its result into an exit
//! status. Everything else is in the library.

mod cli;

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

use cli::args::{Cli, LogFormat};
use cli::{ExitWith, Interrupted};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::dispatch_until_signal(cli.command));
    // Dropping the runtime would wait for idle blocking-pool threads (the
    // SDK's DNS lookups) for seconds; everything that matters has finished.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Already reported by the command itself.
        Err(e) if e.downcast_ref::<ExitWith>().is_some() => {
            ExitCode::from(e.downcast_ref::<ExitWith>().map(|x| x.0).unwrap_or(1))
        }
        Err(e) => {
            if let Some(Interrupted(signal)) = e.downcast_ref::<Interrupted>() {
                eprintln!("interrupted by {signal}");
                // The shell's convention: 128 + the signal's number.
                return ExitCode::from(if *signal == "SIGINT" { 130 } else { 143 });
            }
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .init(),
    }
}
