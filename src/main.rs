//! The `tai-autonomics` binary: `serve` (default) and `config`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tai_autonomics::config::Settings;
use tai_autonomics::startup::Application;
use tai_autonomics::telemetry;

/// Per-tenant autonomic governance service.
#[derive(Parser)]
#[command(name = "tai-autonomics", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (the default).
    Serve,
    /// Print the effective configuration (secrets masked) and exit.
    Config,
}

/// `EX_CONFIG` from sysexits.h: the configuration is wrong.
const EX_CONFIG: u8 = 78;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EX_CONFIG);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::Config => {
            println!("{}", settings.masked_json());
            ExitCode::SUCCESS
        }
        Command::Serve => {
            telemetry::init_tracing(&settings, false);
            telemetry::install_panic_hook();
            let result = actix_web::rt::System::new().block_on(async move {
                let app = Application::build(settings).await?;
                app.run_until_stopped(true).await
            });
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "tai-autonomics stopped with an error"
                    );
                    eprintln!("tai-autonomics: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
