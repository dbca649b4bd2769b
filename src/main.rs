//! `swarmd`: the fleet's single binary. Parsing and dispatch only; the work lives in the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = swarm_director::cli::Cli::parse();
    let runtime = match swarm_director::cli::runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let _telemetry = match swarm_director::cli::init_telemetry(&cli) {
            Ok(telemetry) => telemetry,
            Err(err) => {
                eprintln!("error: {err:#}");
                return std::process::ExitCode::FAILURE;
            }
        };
        match swarm_director::cli::run(cli).await {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("error: {}", swarm_director::cli::error_report(&err));
                std::process::ExitCode::FAILURE
            }
        }
    })
}
