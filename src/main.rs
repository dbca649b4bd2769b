//! `swarmd`: the fleet's single binary. Parsing and dispatch only; the work lives in the library.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = swarm_director::cli::Cli::parse();
    swarm_director::cli::init_logging(&cli);
    match swarm_director::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
