//! The command line, a way in beside the routes and the jobs: `serve`, `migrate`, and the
//! tools around the server.

pub mod events;
pub mod evidence;
pub mod jobs;
pub mod license;
pub mod orders;
pub mod usage;

use crate::app::license_activation::{self, Activation};
use crate::app::{self, AppState};
use crate::config::Settings;
use crate::domain::license_code::LicenseCode;
use crate::marketplace::{self, mock};
use crate::protocol::crypto::KeySize;
use crate::simulate::{self, Interface, Scenario};
use clap::error::ErrorKind;
use clap::{CommandFactory, Parser, Subcommand};
use reqwest::Url;
use secrecy::SecretString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
    /// Apply pending database migrations (and encrypt what an older release left in plain
    /// text) and exit.
    Migrate,
    /// Print a new key for KOOGATE_DATA_KEY, which encrypts credentials and buyer data at
    /// rest (base64 of 32 random bytes).
    DataKey,
    /// Load-test a running server with signed newInstance callbacks.
    Bench(crate::bench::BenchArgs),
    /// Exit 0 when the server on the configured listen address answers /healthz
    /// (the container health check; no curl needed in the image).
    Healthcheck,
    /// What koogate knows of an order, and what the marketplace says of it.
    #[command(subcommand)]
    Orders(OrdersCommand),
    /// Background jobs parked as failed: list them, or queue them again.
    #[command(subcommand)]
    Jobs(JobsCommand),
    /// Events to the merchant's app: make a signing secret, list parked deliveries, send
    /// them again.
    #[command(subcommand)]
    Events(EventsCommand),
    /// License codes (授权码): activate one with KooGallery, or show what koogate knows of
    /// it. Online Licenses (getLicenseAsync): the signing key, checking a License, and the
    /// applications with their uploads.
    #[command(subcommand)]
    License(LicenseCommand),
    /// Write the evidence of an order for a 服务监管 appeal: one self-contained HTML file
    /// with every callback's exact bytes and SHA-256, the state changes, the deliveries to
    /// the app and the code activations.
    Evidence {
        order_id: String,
        /// Where to write the file (standard output when absent).
        #[arg(long, value_name = "FILE")]
        out: Option<std::path::PathBuf>,
    },
    /// Pay-per-use usage: an instance's windows and their push, or push now.
    #[command(subcommand)]
    Usage(UsageCommand),
    /// Run a local stand-in for the KooGallery open APIs (query order, license codes,
    /// License upload, usage push), for trying koogate without a Huawei account.
    MockMarketplace {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = mock::DEFAULT_LISTEN)]
        listen: SocketAddr,
    },
    /// Play KooGallery against a production interface address, as seller center's debugging
    /// page and dial test do, and check every answer. Exit status 0 only when every check passed.
    Simulate(SimulateArgs),
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
pub enum JobsCommand {
    /// The jobs parked as failed after their last attempt, with their last error.
    Failed,
    /// Queue parked jobs again (due now, attempts counted afresh) once the cause is fixed;
    /// a running server picks them up at its next poll.
    Retry {
        /// The ids to queue again (as `orders show` and `jobs failed` print them).
        #[arg(required_unless_present = "all_failed")]
        ids: Vec<i64>,
        /// Queue every failed job again.
        #[arg(long, conflicts_with = "ids")]
        all_failed: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Print a new secret for KOOGATE_EVENTS_SECRET (give the same one to your app).
    Secret,
    /// The deliveries parked after their retry schedule, and the endpoint's pause.
    Failed,
    /// Send parked deliveries again (due now, the schedule afresh), each subject in order.
    Retry {
        /// Event ids (the webhook-id of the deliveries).
        #[arg(required_unless_present = "all_failed")]
        ids: Vec<String>,
        /// Every parked delivery.
        #[arg(long, conflicts_with = "ids")]
        all_failed: bool,
    },
    /// Lift a pause (a 410 Gone) and send every waiting and parked delivery again.
    Resume,
}

#[derive(Debug, Subcommand)]
pub enum UsageCommand {
    /// The instance's usage windows: values, push state, KooGallery's codes, late usage.
    Show { instance_id: String },
    /// Close every window that has ended and push every closed one, without waiting for
    /// :05 (KooGallery keeps the first record of a window: a window pushed early cannot
    /// take usage that arrives later; that goes into the next one).
    Push {
        /// Required: says that windows are closed now.
        #[arg(long, required = true)]
        now: bool,
        /// First put parked windows back in line (once their cause is fixed).
        #[arg(long)]
        retry_parked: bool,
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
    /// Print the public key that checks signed Licenses (raw and PEM), for the client
    /// software. Creates the key beside the SQLite database if there is none yet.
    PublicKey,
    /// Check a signed License token and print its claims; exit status 1 if it is refused.
    Verify {
        /// A file holding the token, or - for standard input.
        file: String,
        /// Check with this public key (PEM) instead of the configured signing key's.
        #[arg(long, value_name = "FILE")]
        public_key: Option<PathBuf>,
    },
    /// The online License applications (newest first), their state and License type.
    Requests {
        /// Only this instance's.
        #[arg(long, value_name = "ID")]
        instance: Option<String>,
    },
    /// One online License application: its facts, its License and every upload attempt.
    Request { event_id: String },
}

/// `koogate simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// The production interface address exactly as bound in seller center, path included
    /// (e.g. https://merchant.example/koogallery/saas). Signature parameters are appended to it.
    #[arg(long, value_name = "URL", value_parser = parse_url)]
    pub url: Url,
    /// The access key bound in seller center to this interface type. Prefer the environment
    /// variable, which keeps the key out of the shell history and the process list.
    #[arg(
        long,
        env = "KOOGATE_SIMULATE_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub key: String,
    /// The interface family the address serves.
    #[arg(long, value_enum, default_value = "saas-v2", value_name = "INTERFACE")]
    pub interface: Interface,
    /// Which named list of steps to run.
    #[arg(long, value_enum, default_value = "all", value_name = "NAME")]
    pub scenario: ScenarioChoice,
    /// Send testFlag=0, as real orders do, instead of the debugging page's testFlag=1 (the
    /// dial-test scenario always sends 1).
    #[arg(long)]
    pub real: bool,
    /// Print the report as JSON (with --verbose, the requests go to standard error).
    #[arg(long)]
    pub json: bool,
    /// Print each request as KooGallery sends it, as a curl command (compare with seller
    /// center's 生成请求命令).
    #[arg(long, short)]
    pub verbose: bool,
    /// saas-v1: the timeStamp window the server applies, in seconds (decision D3); 0 when it
    /// does not check, which leaves out the stale-timeStamp checks.
    #[arg(long, default_value_t = simulate::DEFAULT_V1_WINDOW.as_secs(), value_name = "SECONDS")]
    pub v1_window: u64,
    /// saas-v1: send every newInstance with an encrypted mobilePhone and email, as KooGallery
    /// does for a product that creates the buyer's account from them.
    #[arg(long)]
    pub v1_contact: bool,
    /// saas-v1: the key size the product was published with, which encrypts mobilePhone and
    /// email: 1 for AES-256 (KooGallery's default), 2 for AES-128.
    #[arg(long, default_value = "1", value_name = "ENCRYPT_TYPE", value_parser = parse_encrypt_type)]
    pub v1_encrypt_type: KeySize,
    /// license-code: a license code the server has activated (a test code from seller center),
    /// needed by the lifecycle, idempotency and dial-test scenarios.
    #[arg(long, value_name = "CODE")]
    pub license_code: Option<String>,
}

/// `--scenario`: one scenario, or all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScenarioChoice {
    /// new → query → renew → freeze → unfreeze → upgrade → release → release again
    Lifecycle,
    /// a repeated newInstance, and many at the same moment: one instanceId, identical bytes
    Idempotency,
    /// tampered, wrongly keyed, unsigned, stale, early and replayed requests: each 000001
    Security,
    /// malformed JSON, missing and over-long fields, an unknown activity: each 000002
    BadInput,
    /// the signed form of the body (D1a), forged and unknown-instance requests for every
    /// activity, bad times, and the inputs KooGallery really sends
    Strict,
    /// the saved debugging cases, replayed twice as the dial test replays them
    DialTest,
    /// every scenario
    All,
}

impl ScenarioChoice {
    fn scenarios(self) -> Vec<Scenario> {
        match self {
            Self::Lifecycle => vec![Scenario::Lifecycle],
            Self::Idempotency => vec![Scenario::Idempotency],
            Self::Security => vec![Scenario::Security],
            Self::BadInput => vec![Scenario::BadInput],
            Self::Strict => vec![Scenario::Strict],
            Self::DialTest => vec![Scenario::DialTest],
            Self::All => Scenario::ALL.to_vec(),
        }
    }
}

fn parse_url(text: &str) -> Result<Url, String> {
    let url = Url::parse(text).map_err(|e| {
        format!("{e}: expected the full production address, e.g. https://merchant.example/koogallery/saas")
    })?;
    match url.scheme() {
        "https" | "http" => Ok(url),
        other => Err(format!(
            "the scheme is {other}: expected https:// (or http:// for a local test)"
        )),
    }
}

fn parse_encrypt_type(text: &str) -> Result<KeySize, String> {
    KeySize::from_encrypt_type(text).map_err(|_| "expected 1 (AES-256) or 2 (AES-128)".to_owned())
}

/// Runs `koogate simulate`: the report on standard output, exit status 0 only when every
/// check passed, 2 for a usage error.
#[expect(
    clippy::expect_used,
    reason = "the report is plain data with string keys"
)]
pub async fn simulate(args: SimulateArgs) -> ExitCode {
    let scenarios = args.scenario.scenarios();
    let needs_code = [
        Scenario::Lifecycle,
        Scenario::Idempotency,
        Scenario::DialTest,
    ];
    if args.interface == Interface::LicenseCode
        && args.license_code.is_none()
        && scenarios.iter().any(|s| needs_code.contains(s))
    {
        let error = Cli::command().error(
            ErrorKind::MissingRequiredArgument,
            "--interface license-code needs --license-code CODE for the lifecycle, idempotency and \
             dial-test scenarios: a license code your server has activated (request a test code \
             in seller center); --scenario security, bad-input and strict run without one",
        );
        let _ = error.print();
        return ExitCode::from(2);
    }
    let options = simulate::Options {
        scenarios,
        real: args.real,
        v1_window: Duration::from_secs(args.v1_window),
        v1_contact: args.v1_contact,
        v1_key_size: args.v1_encrypt_type,
        license_code: args.license_code,
        ..simulate::Options::new(args.url, SecretString::from(args.key), args.interface)
    };
    let report = if args.json {
        let report = if args.verbose {
            simulate::run(
                &options,
                &mut simulate::Human::requests_only(std::io::stderr()),
            )
            .await
        } else {
            simulate::run(&options, &mut simulate::Quiet).await
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&report).expect("the report always serialises")
        );
        report
    } else {
        let mut human = simulate::Human::report(std::io::stdout(), args.verbose);
        simulate::run(&options, &mut human).await
    };
    if report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Runs a parsed command with loaded settings.
pub async fn run(command: Command, mut settings: Settings) -> CommandResult {
    match command {
        Command::Serve => serve(settings).await,
        Command::Bench(args) => {
            let report = crate::bench::run(&args).await?;
            println!("{report}");
            Ok(report.verdict(&args.url)?)
        }
        Command::Healthcheck => healthcheck(&settings).await,
        Command::Simulate(args) => {
            let code = simulate(args).await;
            if code == ExitCode::SUCCESS {
                Ok(())
            } else {
                Err("not every check passed".into())
            }
        }
        Command::Migrate => {
            app::open_store(&settings).await?;
            tracing::info!(database = %settings.database_url.redacted(), "migrations applied");
            Ok(())
        }
        Command::DataKey => {
            println!("{}", crate::store::seal::DataKey::generate());
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
        Command::Evidence { order_id, out } => {
            let store = app::open_store(&settings).await?;
            let now_ms = chrono::Utc::now().timestamp_millis();
            let page = evidence::page(store.as_ref(), &order_id, now_ms).await?;
            match out {
                Some(path) => {
                    std::fs::write(&path, page)
                        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                    println!("{}", path.display());
                }
                None => print!("{page}"),
            }
            Ok(())
        }
        Command::Events(EventsCommand::Secret) => {
            println!("{}", events::secret());
            Ok(())
        }
        Command::Events(EventsCommand::Failed) => {
            let store = app::open_store(&settings).await?;
            print!("{}", events::failed(store.as_ref()).await?);
            Ok(())
        }
        Command::Events(EventsCommand::Retry { ids, all_failed }) => {
            let store = app::open_store(&settings).await?;
            let now_ms = chrono::Utc::now().timestamp_millis();
            print!(
                "{}",
                events::retry(store.as_ref(), &ids, all_failed, now_ms).await?
            );
            Ok(())
        }
        Command::Events(EventsCommand::Resume) => {
            let store = app::open_store(&settings).await?;
            let now_ms = chrono::Utc::now().timestamp_millis();
            print!("{}", events::resume(store.as_ref(), now_ms).await?);
            Ok(())
        }
        Command::Jobs(JobsCommand::Failed) => {
            let store = app::open_store(&settings).await?;
            print!("{}", jobs::failed(store.as_ref()).await?);
            Ok(())
        }
        Command::Jobs(JobsCommand::Retry { ids, all_failed }) => {
            let store = app::open_store(&settings).await?;
            let now_ms = chrono::Utc::now().timestamp_millis();
            print!(
                "{}",
                jobs::retry(store.as_ref(), &ids, all_failed, now_ms).await?
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
            let activation = license_activation::activate(
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
                None => {
                    let unfinished = store.unfinished_license_activations().await?;
                    match unfinished.iter().find(|(code, _)| *code == license) {
                        Some((_, started_ms)) => Err(format!(
                            "license code {license}: an activation began at {} but did not \
                             complete; KooGallery may have activated it: run `koogate license \
                             activate {license}` again",
                            crate::protocol::time::format_millis(
                                chrono::DateTime::from_timestamp_millis(*started_ms)
                                    .unwrap_or_default()
                            )
                        )
                        .into()),
                        None => Err(format!(
                            "license code {license} is not known here: activate it first"
                        )
                        .into()),
                    }
                }
            }
        }
        Command::License(LicenseCommand::PublicKey) => {
            let key = signing_key(&mut settings)?;
            print!("{}", license::public_key(&key.public()));
            Ok(())
        }
        Command::License(LicenseCommand::Verify { file, public_key }) => {
            let key = match public_key {
                Some(path) => {
                    let text = std::fs::read_to_string(&path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
                    crate::protocol::license_token::PublicKey::from_pem(&text)
                        .map_err(|e| format!("{}: {e}", path.display()))?
                }
                None => signing_key(&mut settings)?.public(),
            };
            let token = if file == "-" {
                std::io::read_to_string(std::io::stdin())?
            } else {
                std::fs::read_to_string(&file).map_err(|e| format!("cannot read {file}: {e}"))?
            };
            print!(
                "{}",
                license::verify(&key, &token).map_err(|e| format!("refused: {e}"))?
            );
            Ok(())
        }
        Command::License(LicenseCommand::Requests { instance }) => {
            let store = app::open_store(&settings).await?;
            print!(
                "{}",
                license::requests(store.as_ref(), instance.as_deref()).await?
            );
            Ok(())
        }
        Command::License(LicenseCommand::Request { event_id }) => {
            let store = app::open_store(&settings).await?;
            match license::request(store.as_ref(), &event_id).await? {
                Some(report) => {
                    print!("{report}");
                    Ok(())
                }
                None => Err(format!("no License application {event_id} is known here").into()),
            }
        }
        Command::Usage(UsageCommand::Show { instance_id }) => {
            let store = app::open_store(&settings).await?;
            match usage::show(store.as_ref(), &instance_id).await? {
                Some(report) => {
                    print!("{report}");
                    Ok(())
                }
                None => Err(format!("no instance {instance_id} is known here").into()),
            }
        }
        Command::Usage(UsageCommand::Push {
            now: _,
            retry_parked,
        }) => {
            let store = app::open_store(&settings).await?;
            let state = AppState::new(&settings, store, settings.configured_provisioner());
            let now_ms = (state.services.clock)();
            print!(
                "{}",
                usage::push(&state.usage_push(), retry_parked, now_ms)
                    .await
                    .map_err(|e| e.to_string())?
            );
            Ok(())
        }
        Command::MockMarketplace { listen } => mock_marketplace(&settings, listen).await,
    }
}

/// The License signing key: the configured file, or the one beside the SQLite database
/// (created if missing, and said so on standard error).
fn signing_key(
    settings: &mut Settings,
) -> Result<crate::protocol::license_token::LicenseKey, Box<dyn std::error::Error + Send + Sync>> {
    if let Some((path, true)) = settings.prepare_license_key()? {
        eprintln!("created a License signing key in {}", path.display());
    }
    settings.license_key.clone().ok_or_else(|| {
        "no License signing key: set KOOGATE_LICENSE_SIGNING_KEY_FILE to an Ed25519 private key \
         (PKCS#8 PEM, `openssl genpkey -algorithm ed25519`)"
            .into()
    })
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

/// Names the license codes whose activation began and never completed.
async fn warn_about_unfinished_activations(store: &dyn crate::store::Store) {
    match store.unfinished_license_activations().await {
        Ok(unfinished) => {
            for (license, _) in unfinished {
                tracing::warn!(
                    license,
                    "a license-code activation did not complete: run `koogate license activate` \
                     for it again"
                );
            }
        }
        Err(error) => tracing::warn!(%error, "could not list unfinished license activations"),
    }
}

async fn serve(mut settings: Settings) -> CommandResult {
    warn_about_setup(&settings);
    prepare_license_key(&mut settings)?;
    match app::server::raise_open_file_limit() {
        // Room for the database pool, log files and the like beside the connections.
        Ok(limit) if limit < settings.http.max_connections as u64 + 256 => tracing::warn!(
            open_file_limit = limit,
            max_connections = settings.http.max_connections,
            "http.max_connections does not fit within the open-file limit: raise the hard \
             limit (ulimit -Hn) or lower http.max_connections"
        ),
        Ok(limit) => tracing::debug!(open_file_limit = limit, "open-file limit"),
        Err(error) => tracing::warn!(%error, "could not raise the open-file limit"),
    }
    let (store, health) = app::open_store_for_serving(&settings).await?;
    if !health.is_down() {
        warn_about_unfinished_activations(store.as_ref()).await;
    }
    let mut state = AppState::new(&settings, store, settings.configured_provisioner());
    state.services.health = health;
    let public = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| format!("cannot listen on {} (KOOGATE_LISTEN): {e}", settings.listen))?;
    let admin = tokio::net::TcpListener::bind(settings.admin_listen)
        .await
        .map_err(|e| {
            format!(
                "cannot listen on {} (KOOGATE_ADMIN_LISTEN): {e}",
                settings.admin_listen
            )
        })?;
    tracing::info!(
        listen = %public.local_addr()?,
        admin_listen = %admin.local_addr()?,
        database = %settings.database_url.redacted(),
        "koogate is serving the KooGallery production interface"
    );
    if settings.api_tokens.0.is_empty() {
        tracing::warn!("KOOGATE_API_TOKEN is not set: the management API answers 503 until it is");
    }
    app::serve(
        app::Listeners { public, admin },
        state,
        app::shutdown_signal(),
    )
    .await?;
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

/// `signed` License mode needs a key: the configured one, or one kept beside the SQLite
/// database (created on first start). On PostgreSQL there is no such place, so the
/// operator is told to configure a file; License applications are answered `000005`
/// until then, and every other callback as usual.
fn prepare_license_key(settings: &mut Settings) -> CommandResult {
    use crate::domain::license_request::Mode;
    match settings.prepare_license_key()? {
        Some((path, true)) => tracing::warn!(
            path = %path.display(),
            "created a License signing key (mode 0600): back it up; Licenses already issued \
             verify only with its public key (`koogate license public-key`)"
        ),
        Some((path, false)) => {
            tracing::info!(path = %path.display(), "signing Licenses with the key beside the database")
        }
        None if settings.license.mode == Mode::Signed && settings.license_key.is_none() => {
            tracing::warn!(
                "no License signing key: set KOOGATE_LICENSE_SIGNING_KEY_FILE (an Ed25519 PKCS#8 PEM \
                 key) to serve online License products; until then getLicenseAsync is answered 000005"
            )
        }
        None => {}
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
