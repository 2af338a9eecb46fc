use clap::Parser;

fn main() {
    let cli = multipathd_rs::cli::Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("MULTIPATHD_RS_LOG").unwrap_or_else(|_| {
            let level = if matches!(cli.command, multipathd_rs::cli::Cmd::Daemon { .. }) {
                "info"
            } else {
                "warn"
            };
            tracing_subscriber::EnvFilter::new(level)
        });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if matches!(cli.command, multipathd_rs::cli::Cmd::Daemon { .. }) {
        // The first line of a daemon's log: where its start's profile begins.
        tracing::info!("starting (pid {})", std::process::id());
    }
    match multipathd_rs::cli::run(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!(
                "multipathd-rs: {}",
                multipathd_rs::error::sentence(e.as_ref())
            );
            std::process::exit(1);
        }
    }
}
