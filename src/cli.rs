//! The command line: `serve`, `migrate`, and the tools around the server.

use crate::app::{self, AppState};
use crate::config::Settings;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::sync::Arc;

/// A command's outcome; an error is printed once by `main`, with exit status 1.
pub type CommandResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

#[derive(Debug, Parser)]
#[command(
    name = "koogate",
    version,
    about = "The KooGallery production interface, done properly"
)]
pub struct Cli {
    /// A TOML file laid over the built-in defaults (see config/default.toml).
    #[arg(long, global = true, env = "KOOGATE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (applies pending migrations first).
    Serve,
    /// Apply pending database migrations and exit.
    Migrate,
    /// Load-test a running server with signed newInstance callbacks.
    Bench(crate::bench::BenchArgs),
    /// Exit 0 when the server on the configured listen address answers /healthz
    /// (the container health check; no curl needed in the image).
    Healthcheck,
}

/// Runs a parsed command with loaded settings.
pub async fn run(command: Command, settings: Settings) -> CommandResult {
    match command {
        Command::Serve => serve(settings).await,
        Command::Bench(args) => {
            println!("{}", crate::bench::run(&args).await?);
            Ok(())
        }
        Command::Healthcheck => healthcheck(&settings).await,
        Command::Migrate => {
            app::open_store(&settings).await?;
            tracing::info!(database = %redact(&settings.database_url), "migrations applied");
            Ok(())
        }
    }
}

async fn serve(settings: Settings) -> CommandResult {
    warn_about_setup(&settings);
    let store = app::open_store(&settings).await?;
    let state = AppState::new(&settings, store, Arc::new(settings.provisioner()));
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", settings.listen))?;
    tracing::info!(
        listen = %listener.local_addr()?,
        database = %redact(&settings.database_url),
        "koogate is serving the KooGallery production interface"
    );
    app::serve(listener, state, app::shutdown_signal()).await?;
    Ok(())
}

async fn healthcheck(settings: &Settings) -> CommandResult {
    let mut addr = settings.listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let url = format!("http://{addr}/healthz");
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(2))
        .build()?
        .get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()).into());
    }
    Ok(())
}

/// Says loudly what is missing for KooGallery's callbacks to be answered.
fn warn_about_setup(settings: &Settings) {
    let keys = &settings.keys;
    for (ring, var) in [
        (&keys.saas, "KOOGATE_ACCESS_KEY_SAAS"),
        (&keys.license_code, "KOOGATE_ACCESS_KEY_LICENSE_CODE"),
        (&keys.order_notify, "KOOGATE_ACCESS_KEY_ORDER_NOTIFY"),
    ] {
        if ring.is_empty() {
            tracing::warn!(
                "no access key for {var}: every callback on that interface is answered 000001. \
                 Set KOOGATE_ACCESS_KEY (or {var}, or their _FILE forms) to the key bound in seller center"
            );
        }
    }
    if settings.uses_placeholder_frontend() {
        tracing::warn!(
            frontend_url = %settings.frontend_url,
            "appInfo.frontEndUrl still points at the placeholder domain: set KOOGATE_FRONTEND_URL"
        );
    }
}

/// The database URL without its password, for logs.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((credentials, host)) => {
                let user = credentials.split(':').next().unwrap_or_default();
                format!("{scheme}://{user}:[redacted]@{host}")
            }
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(
            redact("postgres://koogate:s3cret@db:5432/k"),
            "postgres://koogate:[redacted]@db:5432/k"
        );
        assert_eq!(
            redact("sqlite://data/koogate.db"),
            "sqlite://data/koogate.db"
        );
    }
}
