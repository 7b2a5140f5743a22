//! The command line: `serve`, `migrate`, and the tools around the server.

pub mod orders;

use crate::app::{self, AppState};
use crate::config::Settings;
use crate::domain::license_code::LicenseCode;
use crate::marketplace::license::Activation;
use crate::marketplace::{self, mock};
use clap::{Parser, Subcommand};
use secrecy::SecretString;
use std::net::SocketAddr;
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
    /// What koogate knows of an order, and what the marketplace says of it.
    #[command(subcommand)]
    Orders(OrdersCommand),
    /// License codes (授权码): activate one with KooGallery, or show what koogate knows of it.
    #[command(subcommand)]
    License(LicenseCommand),
    /// Run a local stand-in for the KooGallery open APIs (query order, license codes,
    /// License upload, usage push), for trying koogate without a Huawei account.
    MockMarketplace {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = mock::DEFAULT_LISTEN)]
        listen: SocketAddr,
    },
}

#[derive(Debug, Subcommand)]
pub enum OrdersCommand {
    /// The order's lines (and what 查询订单 answered for them), its instances, and its
    /// background jobs with their state, attempts and last error.
    Show { order_id: String },
    /// Query the marketplace for the order now (查询订单) and print its answer.
    Fetch {
        order_id: String,
        order_line_id: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum LicenseCommand {
    /// Activate a license code through the open API (激活授权码) and remember it, so that
    /// KooGallery's License-code callbacks about it are answered.
    Activate {
        license: String,
        /// When the code was actually delivered, UTC `yyyyMMddHHmmss` (not before the order).
        #[arg(long, value_name = "TIME")]
        real_effect_time: Option<String>,
    },
    /// What koogate knows of a license code.
    Show { license: String },
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
        Command::Orders(OrdersCommand::Show { order_id }) => {
            let store = app::open_store(&settings).await?;
            match orders::show(store.as_ref(), &order_id).await? {
                Some(report) => {
                    print!("{report}");
                    Ok(())
                }
                None => Err(format!("no order {order_id} is known here").into()),
            }
        }
        Command::Orders(OrdersCommand::Fetch {
            order_id,
            order_line_id,
        }) => {
            let client = marketplace::Client::from_settings(&settings);
            println!(
                "{}",
                orders::fetch(&client, &order_id, order_line_id.as_deref()).await?
            );
            Ok(())
        }
        Command::License(LicenseCommand::Activate {
            license,
            real_effect_time,
        }) => {
            if let Some(t) = &real_effect_time
                && crate::protocol::time::parse_compact(t).is_none()
            {
                return Err(format!("--real-effect-time {t:?} is not yyyyMMddHHmmss").into());
            }
            let store = app::open_store(&settings).await?;
            let client = marketplace::Client::from_settings(&settings);
            let now_ms = chrono::Utc::now().timestamp_millis();
            let activation = marketplace::license::activate(
                &client,
                store.as_ref(),
                &license,
                real_effect_time.as_deref(),
                now_ms,
            )
            .await?;
            match activation {
                Activation::New(code) => print!("activated\n{}", describe_license(&code)),
                Activation::Known(code) => print!("already known\n{}", describe_license(&code)),
            }
            Ok(())
        }
        Command::License(LicenseCommand::Show { license }) => {
            let store = app::open_store(&settings).await?;
            match store.license_code(&license).await? {
                Some(code) => {
                    print!("{}", describe_license(&code));
                    Ok(())
                }
                None => Err(
                    format!("license code {license} is not known here: activate it first").into(),
                ),
            }
        }
        Command::MockMarketplace { listen } => mock_marketplace(&settings, listen).await,
    }
}

/// A license code as `koogate license` prints it, one fact a line.
pub fn describe_license(code: &LicenseCode) -> String {
    let time = |ms: Option<i64>| {
        ms.and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
            .unwrap_or_else(|| "-".into())
    };
    let text = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    format!(
        "license     {}\nstate       {}{}\norder       {}\nproduct     {}\nexpires     {}\nactivated   {}\nlast order  {}\n",
        code.license,
        code.state.as_str(),
        if code.released_by_test {
            " (by a test callback)"
        } else {
            ""
        },
        text(&code.order_id),
        text(&code.product_id),
        time(code.expire_ms),
        time(Some(code.activated_ms)),
        text(&code.last_order_id),
    )
}

/// The AK/SK a mock accepts when none is configured.
const MOCK_AK: &str = "mock-ak";
const MOCK_SK: &str = "mock-sk";

async fn mock_marketplace(settings: &Settings, listen: SocketAddr) -> CommandResult {
    let (ak, sk) = match &settings.marketplace_credentials {
        Some(credentials) => (credentials.ak.clone(), credentials.sk.clone()),
        None => {
            tracing::warn!(
                "no KOOGATE_MARKETPLACE_AK/KOOGATE_MARKETPLACE_SK set: the mock accepts AK {MOCK_AK:?} with SK \
                 {MOCK_SK:?}; give koogate the same pair"
            );
            (MOCK_AK.to_owned(), SecretString::from(MOCK_SK))
        }
    };
    let merchant_key = settings.keys.saas.primary().cloned();
    let mock = mock::Mock::new(&ak, sk, merchant_key);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        "mock marketplace serving; point koogate at it with KOOGATE_MARKETPLACE_URL=http://{addr} \
         KOOGATE_MARKETPLACE_FALLBACK_URL=\"\""
    );
    mock::serve(listener, mock, app::shutdown_signal()).await?;
    Ok(())
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
    if settings.marketplace_credentials.is_none() {
        tracing::warn!(
            "no KOOGATE_MARKETPLACE_AK/KOOGATE_MARKETPLACE_SK: callbacks are answered, but order details \
             cannot be fetched from the open APIs; those jobs are parked as failed with that reason"
        );
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
