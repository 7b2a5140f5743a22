//! Typed settings, layered: the built-in `config/default.toml`, then an optional
//! `--config FILE`, then `KOOGATE_*` environment variables. Access keys come only from
//! the environment or from files, and never print.

use crate::domain::provision::TemplateProvisioner;
use crate::protocol::crypto::KeySize;
use crate::protocol::license_token::LicenseKey;
use crate::protocol::signature::KeyRing;
use crate::protocol::webhook::WebhookSecret;
use crate::store::seal::{DataKey, Sealer};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

/// The built-in defaults; every key is documented there.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// A setting that is missing, malformed or out of range, named by its key.
#[derive(Debug, thiserror::Error)]
#[error("configuration {key}: {problem}")]
pub struct ConfigError {
    pub key: String,
    pub problem: String,
}

/// The dotted key (`log.format`) whose line holds byte `offset` of a TOML text written
/// by `toml::to_string`: the line's key under the last `[table]` header before it.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let before = text.get(..offset)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next()?;
    let (key, _) = line.split_once('=')?;
    let key = key.trim().trim_matches('"');
    let table = before[..line_start]
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix('[')?.strip_suffix(']'));
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_owned(),
    })
}

/// A key with the environment variable that sets it: `log.format (KOOGATE_LOG_FORMAT)`.
fn named(key: &str) -> String {
    format!(
        "{key} ({})",
        format!("KOOGATE_{}", key.replace('.', "_")).to_uppercase()
    )
}

fn err(key: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        problem: problem.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub provisioning: ProvisioningMode,
    pub provisioning_wait_ms: u64,
    /// A secret: PostgreSQL URLs carry a password. Also `KOOGATE_DATABASE_URL_FILE`.
    pub database_url: DatabaseUrl,
    pub frontend_url: String,
    pub admin_url: String,
    pub app: App,
    pub database: Database,
    pub http: Http,
    pub signature: Signature,
    pub saas_v1: SaasV1,
    pub saas_v2: SaasV2,
    pub marketplace: Marketplace,
    pub jobs: Jobs,
    pub events: Events,
    pub usage: Usage,
    pub license: LicenseSettings,
    pub audit: Audit,
    pub buyer_data: BuyerData,
    pub log: Log,
    pub admin_pages: AdminPages,
    #[serde(skip)]
    pub keys: Keys,
    /// The key of data at rest (`KOOGATE_DATA_KEY`), and the old ones that still open
    /// what they sealed (`KOOGATE_DATA_KEY_OLD`); see [`Settings::sealer`].
    #[serde(skip)]
    pub data_key: Option<DataKey>,
    #[serde(skip)]
    pub old_data_keys: Vec<DataKey>,
    /// The AK/SK that signs calls to the open APIs; `None` when not configured.
    #[serde(skip)]
    pub marketplace_credentials: Option<Credentials>,
    /// The secrets that sign event deliveries (`KOOGATE_EVENTS_SECRET`).
    #[serde(skip)]
    pub event_secrets: Vec<WebhookSecret>,
    /// The bearer tokens of the management API (`KOOGATE_API_TOKEN`); empty when none.
    #[serde(skip)]
    pub api_tokens: ApiTokens,
    /// The key that signs Licenses: read from `license.signing_key_file` at load, or by
    /// [`Settings::prepare_license_key`] from beside the SQLite database.
    #[serde(skip)]
    pub license_key: Option<LicenseKey>,
}

/// Online License products (merchant-api.md §5).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LicenseSettings {
    pub mode: crate::domain::license_request::Mode,
    pub signing_key_file: String,
    pub require_fingerprint: bool,
    pub max_bytes: usize,
}

/// The file a License signing key is created in, beside the SQLite database, when no
/// key file is configured.
pub const LICENSE_KEY_FILE_NAME: &str = "license-signing-key.pem";

/// Who provides a new instance's app info (merchant-api.md §3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProvisioningMode {
    Template,
    App,
}

/// Event recording and webhook delivery (merchant-api.md §2).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Events {
    pub url: String,
    pub timeout_ms: u64,
    pub retry_schedule: String,
    pub max_age: String,
    pub retention_days: u32,
}

/// Pay-per-use usage (merchant-api.md §6).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Usage {
    /// The window usage is summed and pushed in.
    pub window: crate::domain::usage::WindowSize,
}

/// The management API's bearer tokens; never printed.
#[derive(Clone, Default)]
pub struct ApiTokens(pub Vec<SecretString>);

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiTokens([{} redacted])", self.0.len())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub user_name: String,
    pub generate_password: bool,
    pub memo: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub max_connections: u32,
    pub acquire_timeout_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http {
    pub max_body_bytes: usize,
    pub callback_deadline_ms: u64,
    pub header_read_timeout_ms: u64,
    pub keep_alive_timeout_ms: u64,
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    pub accept_variant_b: bool,
    pub accept_canonical: bool,
}

/// The SaaS 1.0 interface (spec §4).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaasV1 {
    /// `"1"` (AES-256) or `"2"` (AES-128): the key size chosen when the product was
    /// published (§2.5).
    pub encrypt_type: String,
    /// D3: how far `timeStamp` may be from server time; 0 disables the check.
    pub timestamp_window_secs: u64,
}

/// The SaaS 2.0 interface (spec §3).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaasV2 {
    /// D6: empty returns `queryInstance` credentials in plain text; `"1"` or `"2"`
    /// encrypts them as SaaS 1.0 does, with that key size.
    pub encrypt_type: String,
}

/// Where and how koogate calls the KooGallery open APIs (spec §8).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marketplace {
    pub url: String,
    pub fallback_url: String,
    pub connect_timeout_ms: u64,
    pub request_timeout_ms: u64,
    pub stage: String,
}

/// The durable background work: retries and how replicas share it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Jobs {
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub poll_interval_ms: u64,
    pub lease_ms: u64,
    pub concurrency: u32,
    pub retention_days: u32,
}

/// The Huawei Cloud access key pair (spec §8.1). The AK names the account and is not
/// secret; the SK never prints.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub ak: String,
    pub sk: SecretString,
}

/// The admin pages on the internal listener (merchant-api.md §7).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminPages {
    /// How long a login lasts.
    pub session_minutes: u32,
    /// Mark the session cookie `Secure` even when no `X-Forwarded-Proto: https` says so.
    pub secure_cookie: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Audit {
    /// Days to keep callback records; 0 keeps them all.
    pub retention_days: u32,
}

/// Buyer personal data (decrypted phones and e-mails, 查询订单's buyerInfo).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BuyerData {
    /// Days after an instance's release that its buyer's personal data is kept; 0 keeps
    /// it for ever.
    pub retention_days: u32,
}

/// The database URL: a secret, since a PostgreSQL URL carries a password. `Debug` and
/// [`DatabaseUrl::redacted`] show it without the password.
#[derive(Clone, Deserialize)]
#[serde(from = "String")]
pub struct DatabaseUrl(SecretString);

impl From<String> for DatabaseUrl {
    fn from(url: String) -> Self {
        Self(SecretString::from(url))
    }
}

impl From<&str> for DatabaseUrl {
    fn from(url: &str) -> Self {
        Self::from(url.to_owned())
    }
}

impl DatabaseUrl {
    /// The URL itself, for connecting only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// The URL for logs and errors: see [`redact_url`].
    pub fn redacted(&self) -> String {
        redact_url(self.expose())
    }

    pub fn is_sqlite(&self) -> bool {
        self.expose().starts_with("sqlite:")
    }
}

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DatabaseUrl({:?})", self.redacted())
    }
}

/// What stands for a password in a URL shown in logs and errors.
const URL_REDACTED: &str = "[redacted]";

/// A URL as logs and errors show it: the password of the user part and any `password`
/// query parameter replaced by `[redacted]`, the user name kept. The URL is parsed, so a
/// password holding `@` or a query holding `@` is redacted whole; one that cannot be
/// parsed shows its scheme only.
pub fn redact_url(url: &str) -> String {
    let Ok(parsed) = reqwest::Url::parse(url) else {
        let scheme = url.split_once(':').map_or("", |(scheme, _)| scheme);
        return format!("{scheme}:{URL_REDACTED}");
    };
    if parsed.cannot_be_a_base() {
        // `scheme:rest` without `//`: no user part to find, so any `@` is suspect.
        return if url.contains('@') {
            format!("{}:{URL_REDACTED}", parsed.scheme())
        } else {
            url.to_owned()
        };
    }
    let secret_param = |pair: &str| {
        let name = pair.split_once('=').map_or(pair, |(name, _)| name);
        name.eq_ignore_ascii_case("password") || name.eq_ignore_ascii_case("sslpassword")
    };
    let query_secret = parsed
        .query()
        .is_some_and(|q| q.split('&').any(secret_param));
    if parsed.password().is_none() && !query_secret {
        return url.to_owned();
    }
    let mut shown = format!("{}://", parsed.scheme());
    if !parsed.username().is_empty() || parsed.password().is_some() {
        shown.push_str(parsed.username());
        if parsed.password().is_some() {
            shown.push(':');
            shown.push_str(URL_REDACTED);
        }
        shown.push('@');
    }
    if let Some(host) = parsed.host_str() {
        shown.push_str(host);
    }
    if let Some(port) = parsed.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(parsed.path());
    if let Some(query) = parsed.query() {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| {
                if secret_param(pair) {
                    let name = pair.split_once('=').map_or(pair, |(name, _)| name);
                    format!("{name}={URL_REDACTED}")
                } else {
                    pair.to_owned()
                }
            })
            .collect();
        shown.push('?');
        shown.push_str(&pairs.join("&"));
    }
    shown
}

/// The file a data key is created in, beside the SQLite database, when none is
/// configured.
pub const DATA_KEY_FILE_NAME: &str = "data-key";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    pub format: LogFormat,
    pub filter: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

/// The access keys of each seller-center interface type (spec §B).
#[derive(Debug, Clone, Default)]
pub struct Keys {
    pub saas: KeyRing,
    pub license_code: KeyRing,
    pub order_notify: KeyRing,
}

impl Keys {
    pub fn is_empty(&self) -> bool {
        self.saas.is_empty() && self.license_code.is_empty() && self.order_notify.is_empty()
    }
}

impl Settings {
    /// Loads the settings from the process environment.
    pub fn load(config_file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with(config_file, |name| std::env::var(name).ok())
    }

    /// Loads the settings with `env` standing in for the environment (tests).
    pub fn load_with(
        config_file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = DEFAULT_TOML
            .parse()
            .map_err(|e| err("default.toml", format!("{e}")))?;
        if let Some(path) = config_file {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path)
                .map_err(|e| err(&name, format!("cannot read: {e}")))?;
            let overlay: toml::Table = text.parse().map_err(|e| err(&name, format!("{e}")))?;
            merge(&mut table, overlay, "")?;
        }
        apply_env(&mut table, "KOOGATE", &env)?;
        // The URL carries the PostgreSQL password: it may come from a file instead.
        if let Some(url) = secret("KOOGATE_DATABASE_URL", &env)? {
            table.insert(
                "database_url".into(),
                toml::Value::String(url.trim().to_owned()),
            );
        }
        // Read from text, so that the error's position names the key that is wrong.
        let text = toml::to_string(&table).map_err(|e| err("settings", e.to_string()))?;
        let mut settings: Settings = toml::from_str(&text).map_err(|e: toml::de::Error| {
            let key = e
                .span()
                .and_then(|span| key_at(&text, span.start))
                .map_or_else(|| "settings".to_owned(), |key| named(&key));
            err(key, e.message().to_owned())
        })?;
        settings.keys = load_keys(&env)?;
        settings.marketplace_credentials = load_credentials(&env)?;
        settings.event_secrets = load_event_secrets(&env)?;
        settings.api_tokens = ApiTokens(
            secret("KOOGATE_API_TOKEN", &env)?
                .map(|list| {
                    list.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(|t| SecretString::from(t.to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
        );
        settings.license_key = read_license_key(&settings.license.signing_key_file)?;
        settings.data_key = secret("KOOGATE_DATA_KEY", &env)?
            .map(|text| DataKey::parse(&text).map_err(|problem| err("KOOGATE_DATA_KEY", problem)))
            .transpose()?;
        settings.old_data_keys = secret("KOOGATE_DATA_KEY_OLD", &env)?
            .unwrap_or_default()
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .enumerate()
            .map(|(n, text)| {
                DataKey::parse(text).map_err(|problem| {
                    err(
                        "KOOGATE_DATA_KEY_OLD",
                        format!("key {} of the list {problem}", n + 1),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        settings.validate()?;
        Ok(settings)
    }

    /// The signing key of `signed` mode when no key file is configured: the one beside the
    /// SQLite database, created there (mode 0600) on first use. Returns where it is and
    /// whether it was just created; `None` when there is nowhere to keep one (PostgreSQL,
    /// an in-memory database) or it is not needed.
    pub fn prepare_license_key(
        &mut self,
    ) -> Result<Option<(std::path::PathBuf, bool)>, ConfigError> {
        use crate::domain::license_request::Mode;
        if self.license_key.is_some()
            || self.license.mode != Mode::Signed
            || !self.database_url.is_sqlite()
        {
            return Ok(None);
        }
        let key = "license.signing_key_file";
        let Some(path) = self.beside_sqlite(LICENSE_KEY_FILE_NAME)? else {
            return Ok(None);
        };
        if path.exists() {
            self.license_key = read_license_key(&path.to_string_lossy())?;
            return Ok(Some((path, false)));
        }
        if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder)
                .map_err(|e| err(key, format!("cannot create {}: {e}", folder.display())))?;
        }
        let generated = LicenseKey::generate();
        write_private(&path, generated.to_pem().as_bytes())
            .map_err(|e| err(key, format!("cannot create {}: {e}", path.display())))?;
        self.license_key = Some(generated);
        Ok(Some((path, true)))
    }

    /// Where a file named `name` beside the SQLite database goes; `None` on PostgreSQL.
    fn beside_sqlite(&self, name: &str) -> Result<Option<std::path::PathBuf>, ConfigError> {
        if !self.database_url.is_sqlite() {
            return Ok(None);
        }
        let options = <sqlx::sqlite::SqliteConnectOptions as std::str::FromStr>::from_str(
            self.database_url.expose(),
        )
        .map_err(|e| err("database_url", e.to_string()))?;
        let db = options.get_filename();
        if db.as_os_str().is_empty() || db.to_string_lossy().contains(":memory:") {
            return Ok(None);
        }
        Ok(Some(
            db.parent().unwrap_or_else(|| Path::new(".")).join(name),
        ))
    }

    /// What seals data at rest: `KOOGATE_DATA_KEY` (with `KOOGATE_DATA_KEY_OLD` for
    /// reading), else on SQLite the key file beside the database, created (mode 0600) on
    /// first use. PostgreSQL needs a configured key: replicas must share it, and a key
    /// kept beside nothing would be lost with the container. Returns the path of the key
    /// file and whether it was just created, when one is used.
    #[expect(clippy::expect_used, reason = "a generated key parses")]
    pub fn sealer(&self) -> Result<(Sealer, Option<(std::path::PathBuf, bool)>), ConfigError> {
        let old = self.old_data_keys.clone();
        if let Some(key) = &self.data_key {
            return Ok((Sealer::new(key.clone(), old), None));
        }
        let name = "KOOGATE_DATA_KEY";
        let Some(path) = self.beside_sqlite(DATA_KEY_FILE_NAME)? else {
            return Err(err(
                name,
                "is missing: PostgreSQL needs the key that encrypts credentials and buyer data at \
                 rest, the same on every replica (32 bytes as base64 or hex; `koogate data-key` \
                 prints a new one), or KOOGATE_DATA_KEY_FILE",
            ));
        };
        if path.exists() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| err(name, format!("cannot read {}: {e}", path.display())))?;
            let key = DataKey::parse(&text)
                .map_err(|problem| err(name, format!("{}: {problem}", path.display())))?;
            return Ok((Sealer::new(key, old), Some((path, false))));
        }
        if let Some(folder) = path.parent().filter(|f| !f.as_os_str().is_empty()) {
            std::fs::create_dir_all(folder)
                .map_err(|e| err(name, format!("cannot create {}: {e}", folder.display())))?;
        }
        let text = DataKey::generate();
        write_private(&path, format!("{text}\n").as_bytes())
            .map_err(|e| err(name, format!("cannot create {}: {e}", path.display())))?;
        let key = DataKey::parse(&text).expect("a generated key parses");
        Ok((Sealer::new(key, old), Some((path, true))))
    }

    /// How long buyer personal data is kept after a release, if not for ever.
    pub fn buyer_data_retention(&self) -> Option<Duration> {
        (self.buyer_data.retention_days > 0)
            .then(|| Duration::from_secs(u64::from(self.buyer_data.retention_days) * 86_400))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let url = self.database_url.expose();
        let shown = self.database_url.redacted();
        if !(url.starts_with("sqlite:")
            || url.starts_with("postgres:")
            || url.starts_with("postgresql:"))
        {
            return Err(err(
                "database_url",
                format!("{shown:?} is neither sqlite://… nor postgres://…"),
            ));
        }
        if let Some(rest) = url.strip_prefix("sqlite:")
            && names_no_file(rest)
        {
            return Err(err(
                "database_url",
                format!("{shown:?} names no file: every instance would be lost at exit"),
            ));
        }
        if self.database.max_connections == 0 {
            return Err(err("database.max_connections", "must be at least 1"));
        }
        if !(1..=10_080).contains(&self.admin_pages.session_minutes) {
            return Err(err(
                "admin_pages.session_minutes",
                "must be between 1 and 10080 (a week)",
            ));
        }
        if self.http.max_body_bytes < 1024 {
            return Err(err("http.max_body_bytes", "must be at least 1024"));
        }
        if !(100..=30_000).contains(&self.http.callback_deadline_ms) {
            return Err(err(
                "http.callback_deadline_ms",
                "must be between 100 and 30000",
            ));
        }
        if !(100..=60_000).contains(&self.http.header_read_timeout_ms) {
            return Err(err(
                "http.header_read_timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        if !(100..=600_000).contains(&self.http.keep_alive_timeout_ms) {
            return Err(err(
                "http.keep_alive_timeout_ms",
                "must be between 100 and 600000",
            ));
        }
        if self.http.max_connections == 0 {
            return Err(err("http.max_connections", "must be at least 1"));
        }
        if self.database.acquire_timeout_ms >= self.http.callback_deadline_ms {
            // Otherwise a database outage makes callbacks wait out the whole deadline for a
            // connection, and their 000005 arrives after KooGallery has given up.
            return Err(err(
                "database.acquire_timeout_ms",
                "must be shorter than http.callback_deadline_ms",
            ));
        }
        self.saas_v1_key_size()?;
        self.saas_v2_key_size()?;
        self.validate_events()?;
        if self.license.max_bytes == 0 {
            return Err(err("license.max_bytes", "must be at least 1"));
        }
        if self.provisioning == ProvisioningMode::App
            && self.provisioning_wait_ms + PROVISIONING_MARGIN_MS > self.http.callback_deadline_ms
        {
            return Err(err(
                "provisioning_wait_ms",
                format!(
                    "must be at least {PROVISIONING_MARGIN_MS} ms shorter than \
                     http.callback_deadline_ms ({}), so the answer still arrives in time",
                    self.http.callback_deadline_ms
                ),
            ));
        }
        self.validate_marketplace()?;
        self.validate_jobs()?;
        self.provisioner()
            .check()
            .map_err(|problem| err("frontend_url/admin_url/app", problem))
    }

    fn validate_events(&self) -> Result<(), ConfigError> {
        let e = &self.events;
        if !e.url.is_empty() {
            check_https_url("events.url", &e.url, "an endpoint on this machine")?;
            if self.event_secrets.is_empty() {
                return Err(err(
                    "KOOGATE_EVENTS_SECRET",
                    "is missing: events.url is set, and deliveries must be signed \
                     (`koogate events secret` makes one)",
                ));
            }
        }
        if !(100..=120_000).contains(&e.timeout_ms) {
            return Err(err("events.timeout_ms", "must be between 100 and 120000"));
        }
        self.event_schedule()?;
        Ok(())
    }

    /// The retry schedule of event deliveries, from `[events]`.
    pub fn event_schedule(&self) -> Result<crate::jobs::event_delivery::Schedule, ConfigError> {
        let e = &self.events;
        let parse = |key: &str, text: &str| {
            humantime::parse_duration(text.trim())
                .map_err(|problem| err(key, format!("{text:?} is not a duration: {problem}")))
        };
        let max_age = parse("events.max_age", &e.max_age)?;
        let waits = if e.retry_schedule.trim().is_empty() {
            None
        } else {
            let waits = e
                .retry_schedule
                .split(',')
                .map(|w| parse("events.retry_schedule", w))
                .collect::<Result<Vec<_>, _>>()?;
            if waits.iter().any(Duration::is_zero) {
                return Err(err("events.retry_schedule", "waits must be longer than 0"));
            }
            Some(waits)
        };
        Ok(crate::jobs::event_delivery::Schedule { waits, max_age })
    }

    /// How long finished jobs are kept, if not for ever.
    pub fn job_retention(&self) -> Option<Duration> {
        (self.jobs.retention_days > 0)
            .then(|| Duration::from_secs(u64::from(self.jobs.retention_days) * 86_400))
    }

    /// How long events are kept, if not for ever.
    pub fn event_retention(&self) -> Option<Duration> {
        (self.events.retention_days > 0)
            .then(|| Duration::from_secs(u64::from(self.events.retention_days) * 86_400))
    }

    /// The key size of SaaS 1.0 field encryption (`saas_v1.encrypt_type`).
    pub fn saas_v1_key_size(&self) -> Result<KeySize, ConfigError> {
        KeySize::from_encrypt_type(self.saas_v1.encrypt_type.trim())
            .map_err(|problem| err("saas_v1.encrypt_type", problem.to_string()))
    }

    /// The key size SaaS 2.0 `queryInstance` encrypts credentials with, or `None` for
    /// plain text (`saas_v2.encrypt_type`, D6).
    pub fn saas_v2_key_size(&self) -> Result<Option<KeySize>, ConfigError> {
        match self.saas_v2.encrypt_type.trim() {
            "" => Ok(None),
            value => KeySize::from_encrypt_type(value)
                .map(Some)
                .map_err(|problem| err("saas_v2.encrypt_type", problem.to_string())),
        }
    }

    fn validate_marketplace(&self) -> Result<(), ConfigError> {
        let m = &self.marketplace;
        check_open_api_url("marketplace.url", &m.url)?;
        if !m.fallback_url.is_empty() {
            check_open_api_url("marketplace.fallback_url", &m.fallback_url)?;
        }
        if !(100..=60_000).contains(&m.connect_timeout_ms) {
            return Err(err(
                "marketplace.connect_timeout_ms",
                "must be between 100 and 60000",
            ));
        }
        if !(100..=300_000).contains(&m.request_timeout_ms) {
            return Err(err(
                "marketplace.request_timeout_ms",
                "must be between 100 and 300000",
            ));
        }
        let header_safe = |c: char| c.is_ascii_graphic();
        if !m.stage.chars().all(header_safe) {
            return Err(err(
                "marketplace.stage",
                "must be printable ASCII without spaces",
            ));
        }
        Ok(())
    }

    fn validate_jobs(&self) -> Result<(), ConfigError> {
        let j = &self.jobs;
        if !(1..=1000).contains(&j.max_attempts) {
            return Err(err("jobs.max_attempts", "must be between 1 and 1000"));
        }
        if j.backoff_base_ms == 0 || j.backoff_max_ms < j.backoff_base_ms {
            return Err(err(
                "jobs.backoff_max_ms",
                "backoff_base_ms must be at least 1 and backoff_max_ms at least backoff_base_ms",
            ));
        }
        if !(1..=64).contains(&j.concurrency) {
            return Err(err("jobs.concurrency", "must be between 1 and 64"));
        }
        if j.poll_interval_ms < 10 {
            return Err(err("jobs.poll_interval_ms", "must be at least 10"));
        }
        // A job's attempt is cut off shortly before its lease ends, so that no other
        // replica takes the job while it still runs: the lease must fit the slowest
        // open-API call, a refused primary host followed by the fallback.
        let m = &self.marketplace;
        let slowest = 2 * m.connect_timeout_ms + m.request_timeout_ms + LEASE_MARGIN_MS;
        if j.lease_ms < slowest {
            return Err(err(
                "jobs.lease_ms",
                format!(
                    "must be at least {slowest} (2 × marketplace.connect_timeout_ms + \
                     marketplace.request_timeout_ms + {LEASE_MARGIN_MS})"
                ),
            ));
        }
        Ok(())
    }

    /// The provisioner `provisioning` names: the templates, or the merchant's app.
    pub fn configured_provisioner(
        &self,
    ) -> std::sync::Arc<dyn crate::domain::provision::Provisioner> {
        match self.provisioning {
            ProvisioningMode::Template => std::sync::Arc::new(self.provisioner()),
            ProvisioningMode::App => std::sync::Arc::new(crate::domain::provision::AppProvisioner),
        }
    }

    /// The built-in provisioner these settings describe.
    pub fn provisioner(&self) -> TemplateProvisioner {
        let non_empty = |s: &str| (!s.trim().is_empty()).then(|| s.to_owned());
        TemplateProvisioner {
            front_end_url: self.frontend_url.clone(),
            admin_url: non_empty(&self.admin_url),
            user_name: non_empty(&self.app.user_name),
            generate_password: self.app.generate_password,
            memo: non_empty(&self.app.memo),
        }
    }

    pub fn acquire_timeout(&self) -> Duration {
        Duration::from_millis(self.database.acquire_timeout_ms)
    }

    /// How long callback records are kept, if not for ever.
    pub fn audit_retention(&self) -> Option<Duration> {
        (self.audit.retention_days > 0)
            .then(|| Duration::from_secs(u64::from(self.audit.retention_days) * 86_400))
    }

    pub fn callback_deadline(&self) -> Duration {
        Duration::from_millis(self.http.callback_deadline_ms)
    }

    /// What the public listener allows each connection; a stop gives the requests in
    /// flight the callback deadline.
    pub fn connection_limits(&self) -> crate::app::server::Limits {
        crate::app::server::Limits {
            header_read_timeout: Duration::from_millis(self.http.header_read_timeout_ms),
            keep_alive_timeout: Duration::from_millis(self.http.keep_alive_timeout_ms),
            max_connections: self.http.max_connections,
            drain: self.callback_deadline(),
        }
    }

    /// How the job worker runs, from `[jobs]`.
    pub fn job_policy(&self) -> crate::jobs::Policy {
        let j = &self.jobs;
        crate::jobs::Policy {
            max_attempts: j.max_attempts,
            backoff_base: Duration::from_millis(j.backoff_base_ms),
            backoff_max: Duration::from_millis(j.backoff_max_ms),
            poll_interval: Duration::from_millis(j.poll_interval_ms),
            lease: Duration::from_millis(j.lease_ms),
            attempt_timeout: Duration::from_millis(j.lease_ms - LEASE_MARGIN_MS),
            concurrency: j.concurrency,
        }
    }

    /// The frontend template still holds the placeholder domain of the defaults.
    pub fn uses_placeholder_frontend(&self) -> bool {
        self.frontend_url.contains("app.example.com")
    }
}

/// How long before its lease ends a job's attempt is cut off, in milliseconds.
const LEASE_MARGIN_MS: u64 = 500;

/// How much of the callback deadline the provisioning wait must leave for answering.
const PROVISIONING_MARGIN_MS: u64 = 500;

/// An open-API base URL: `https://…`, or `http://` on this machine only (the mock
/// marketplace), since the open APIs carry the AK/SK signature and buyer details.
/// Whether what follows `sqlite:` opens an in-memory database (no path, `:memory:`, or
/// `mode=memory`), whose every instance would vanish at exit.
fn names_no_file(rest: &str) -> bool {
    let rest = rest.strip_prefix("//").unwrap_or(rest);
    let (path, options) = rest.split_once('?').unwrap_or((rest, ""));
    matches!(path, "" | ":memory:") || options.split('&').any(|o| o == "mode=memory")
}

fn check_open_api_url(key: &str, url: &str) -> Result<(), ConfigError> {
    check_https_url(key, url, "a mock on this machine")
}

/// An outbound URL that carries signed or personal data: `https://…`, or `http://` to a
/// loopback address only (`what` says what such an address would be).
fn check_https_url(key: &str, url: &str, what: &str) -> Result<(), ConfigError> {
    let parsed = reqwest::Url::parse(url).map_err(|e| err(key, format!("{url:?}: {e}")))?;
    let loopback = parsed.host_str().is_some_and(|host| {
        host == "localhost"
            || host
                .trim_matches(['[', ']'])
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    });
    match parsed.scheme() {
        "https" => {}
        "http" if loopback => {}
        _ => {
            return Err(err(
                key,
                format!("{url:?} must be https:// (http:// only for {what})"),
            ));
        }
    }
    if parsed.query().is_some() || parsed.fragment().is_some() || parsed.host().is_none() {
        return Err(err(
            key,
            format!("{url:?} must be a scheme, a host and optionally a path"),
        ));
    }
    Ok(())
}

/// Lays `overlay` over `base`, refusing keys the defaults do not know.
fn merge(base: &mut toml::Table, overlay: toml::Table, prefix: &str) -> Result<(), ConfigError> {
    for (key, value) in overlay {
        let path = if prefix.is_empty() {
            key.clone()
        } else {
            format!("{prefix}.{key}")
        };
        match (base.get_mut(&key), value) {
            (None, _) => return Err(err(path, "unknown key")),
            (Some(toml::Value::Table(inner)), toml::Value::Table(value)) => {
                merge(inner, value, &path)?
            }
            (Some(slot), value) if slot.same_type(&value) => *slot = value,
            (Some(slot), _) => return Err(err(path, format!("expected a {}", slot.type_str()))),
        }
    }
    Ok(())
}

/// Overrides every leaf of `table` whose environment variable is set.
fn apply_env(
    table: &mut toml::Table,
    prefix: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    for (key, slot) in table.iter_mut() {
        let name = format!("{prefix}_{}", key.to_ascii_uppercase());
        if let toml::Value::Table(inner) = slot {
            apply_env(inner, &name, env)?;
            continue;
        }
        let Some(raw) = env(&name) else { continue };
        let bad = |what: &str| err(&name, format!("{raw:?} is not {what}"));
        *slot = match slot {
            toml::Value::String(_) => toml::Value::String(raw.clone()),
            toml::Value::Integer(_) => {
                toml::Value::Integer(raw.trim().parse().map_err(|_| bad("an integer"))?)
            }
            toml::Value::Boolean(_) => {
                toml::Value::Boolean(raw.trim().parse().map_err(|_| bad("true or false"))?)
            }
            other => {
                return Err(err(
                    &name,
                    format!("cannot be set from the environment ({})", other.type_str()),
                ));
            }
        };
    }
    Ok(())
}

/// Reads the License signing key named by `license.signing_key_file`, if any: a file that
/// is missing, unreadable or not an Ed25519 key refuses the start, with the path and why.
fn read_license_key(path: &str) -> Result<Option<LicenseKey>, ConfigError> {
    if path.trim().is_empty() {
        return Ok(None);
    }
    let key = "license.signing_key_file";
    let text = std::fs::read_to_string(path)
        .map_err(|e| err(key, format!("cannot read {path:?}: {e}")))?;
    LicenseKey::from_pem(&text)
        .map(Some)
        .map_err(|problem| err(key, format!("{path:?}: {problem}")))
}

/// Creates a file only its owner can read, refusing to replace one.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Reads a secret from `NAME` or from the file named by `NAME_FILE` (not both).
fn secret(
    name: &str,
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    let file_var = format!("{name}_FILE");
    match (env(name), env(&file_var)) {
        (Some(_), Some(_)) => Err(err(
            name,
            format!("set either {name} or {file_var}, not both"),
        )),
        (Some(value), None) => Ok(Some(value)),
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map(|text| Some(text.trim_end_matches(['\r', '\n']).to_owned()))
            .map_err(|e| err(&file_var, format!("cannot read {path:?}: {e}"))),
        (None, None) => Ok(None),
    }
}

fn load_keys(env: &impl Fn(&str) -> Option<String>) -> Result<Keys, ConfigError> {
    let common = secret("KOOGATE_ACCESS_KEY", env)?;
    let ring = |name: &str| -> Result<KeyRing, ConfigError> {
        let own = secret(name, env)?;
        Ok(own
            .or_else(|| common.clone())
            .map(|list| KeyRing::from_list(&list))
            .unwrap_or_default())
    };
    Ok(Keys {
        saas: ring("KOOGATE_ACCESS_KEY_SAAS")?,
        license_code: ring("KOOGATE_ACCESS_KEY_LICENSE_CODE")?,
        order_notify: ring("KOOGATE_ACCESS_KEY_ORDER_NOTIFY")?,
    })
}

/// `KOOGATE_EVENTS_SECRET` (or its `_FILE` form): comma-separated `whsec_…` secrets.
fn load_event_secrets(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Vec<WebhookSecret>, ConfigError> {
    let Some(list) = secret("KOOGATE_EVENTS_SECRET", env)? else {
        return Ok(Vec::new());
    };
    list.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(n, text)| {
            WebhookSecret::parse(text).map_err(|problem| {
                err(
                    "KOOGATE_EVENTS_SECRET",
                    format!("secret {} of the list {problem}", n + 1),
                )
            })
        })
        .collect()
}

/// `KOOGATE_MARKETPLACE_AK` and `KOOGATE_MARKETPLACE_SK` (or their `_FILE` forms):
/// both or neither.
fn load_credentials(
    env: &impl Fn(&str) -> Option<String>,
) -> Result<Option<Credentials>, ConfigError> {
    let ak = secret("KOOGATE_MARKETPLACE_AK", env)?.filter(|s| !s.trim().is_empty());
    let sk = secret("KOOGATE_MARKETPLACE_SK", env)?.filter(|s| !s.is_empty());
    match (ak, sk) {
        (Some(ak), Some(sk)) => Ok(Some(Credentials {
            ak: ak.trim().to_owned(),
            sk: SecretString::from(sk),
        })),
        (None, None) => Ok(None),
        (Some(_), None) => Err(err(
            "KOOGATE_MARKETPLACE_SK",
            "is missing: KOOGATE_MARKETPLACE_AK is set, and the pair goes together",
        )),
        (None, Some(_)) => Err(err(
            "KOOGATE_MARKETPLACE_AK",
            "is missing: KOOGATE_MARKETPLACE_SK is set, and the pair goes together",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;
    use std::collections::HashMap;

    fn load(vars: &[(&str, &str)], file: Option<&Path>) -> Result<Settings, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load_with(file, |name| vars.get(name).cloned())
    }

    #[test]
    fn defaults_load_and_run_on_sqlite() {
        let s = load(&[], None).unwrap();
        assert_eq!(
            s.audit_retention(),
            Some(Duration::from_secs(90 * 86_400)),
            "callback records are not kept for ever by default"
        );
        let kept = load(&[("KOOGATE_AUDIT_RETENTION_DAYS", "0")], None).unwrap();
        assert_eq!(kept.audit_retention(), None);
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert!(s.database_url.expose().starts_with("sqlite://"));
        assert!(s.keys.is_empty());
        assert_eq!(s.http.max_body_bytes, 65536);
        assert_eq!(s.saas_v1_key_size().unwrap(), KeySize::Aes256);
        assert_eq!(s.saas_v1.timestamp_window_secs, 600);
        assert_eq!(s.saas_v2_key_size().unwrap(), None, "D6: plain by default");
    }

    #[test]
    fn encryption_settings_come_from_the_environment() {
        let s = load(
            &[
                ("KOOGATE_SAAS_V1_ENCRYPT_TYPE", "2"),
                ("KOOGATE_SAAS_V1_TIMESTAMP_WINDOW_SECS", "0"),
                ("KOOGATE_SAAS_V2_ENCRYPT_TYPE", "1"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(s.saas_v1_key_size().unwrap(), KeySize::Aes128);
        assert_eq!(s.saas_v1.timestamp_window_secs, 0);
        assert_eq!(s.saas_v2_key_size().unwrap(), Some(KeySize::Aes256));
    }

    #[test]
    fn environment_overrides_every_documented_name() {
        let s = load(
            &[
                ("KOOGATE_LISTEN", "0.0.0.0:9000"),
                ("KOOGATE_DATABASE_URL", "postgres://db/koogate"),
                (
                    "KOOGATE_FRONTEND_URL",
                    "https://shop.example.net/{instanceId}",
                ),
                (
                    "KOOGATE_ADMIN_URL",
                    "https://admin.example.net/{instanceId}",
                ),
                ("KOOGATE_DATABASE_MAX_CONNECTIONS", "4"),
                ("KOOGATE_SIGNATURE_ACCEPT_VARIANT_B", "true"),
                ("KOOGATE_AUDIT_RETENTION_DAYS", "30"),
                ("KOOGATE_ACCESS_KEY", "k1,k2"),
                ("KOOGATE_ACCESS_KEY_ORDER_NOTIFY", "notify-key"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.database.max_connections, 4);
        assert!(s.signature.accept_variant_b);
        assert_eq!(s.audit_retention(), Some(Duration::from_secs(30 * 86_400)));
        assert_eq!(
            s.provisioner().admin_url.as_deref(),
            Some("https://admin.example.net/{instanceId}")
        );
        assert_eq!(s.keys.saas.len(), 2);
        assert_eq!(s.keys.license_code.primary().unwrap().expose_secret(), "k1");
        assert_eq!(
            s.keys.order_notify.primary().unwrap().expose_secret(),
            "notify-key"
        );
    }

    #[test]
    fn keys_can_come_from_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        std::fs::write(&path, "from-file\n").unwrap();
        let s = load(
            &[("KOOGATE_ACCESS_KEY_SAAS_FILE", path.to_str().unwrap())],
            None,
        )
        .unwrap();
        assert_eq!(s.keys.saas.primary().unwrap().expose_secret(), "from-file");
        assert!(s.keys.order_notify.is_empty());
        let both = load(
            &[
                ("KOOGATE_ACCESS_KEY", "a"),
                ("KOOGATE_ACCESS_KEY_FILE", "/x"),
            ],
            None,
        )
        .unwrap_err();
        assert_eq!(both.key, "KOOGATE_ACCESS_KEY");
    }

    #[test]
    fn a_config_file_layers_over_the_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("koogate.toml");
        std::fs::write(
            &path,
            "listen = \"127.0.0.1:7000\"\n[http]\nmax_body_bytes = 2048\n",
        )
        .unwrap();
        let s = load(&[("KOOGATE_LISTEN", "127.0.0.1:7001")], Some(&path)).unwrap();
        assert_eq!(s.listen.port(), 7001, "environment wins over the file");
        assert_eq!(s.http.max_body_bytes, 2048);
    }

    #[test]
    fn mistakes_name_the_key() {
        let dir = tempfile::tempdir().unwrap();
        type Case<'a> = (Vec<(&'a str, &'a str)>, Option<&'a str>, &'a str);
        let cases: Vec<Case> = vec![
            (
                vec![("KOOGATE_DATABASE_MAX_CONNECTIONS", "many")],
                None,
                "KOOGATE_DATABASE_MAX_CONNECTIONS",
            ),
            (
                vec![("KOOGATE_DATABASE_URL", "mysql://x")],
                None,
                "database_url",
            ),
            (
                vec![("KOOGATE_DATABASE_ACQUIRE_TIMEOUT_MS", "4000")],
                None,
                "database.acquire_timeout_ms",
            ),
            (
                vec![("KOOGATE_DATABASE_URL", "sqlite:")],
                None,
                "database_url",
            ),
            (
                vec![("KOOGATE_DATABASE_URL", "sqlite://")],
                None,
                "database_url",
            ),
            (
                vec![("KOOGATE_DATABASE_URL", "sqlite::memory:")],
                None,
                "database_url",
            ),
            (
                vec![("KOOGATE_DATABASE_URL", "sqlite://x.db?mode=memory")],
                None,
                "database_url",
            ),
            (
                vec![("KOOGATE_HTTP_HEADER_READ_TIMEOUT_MS", "0")],
                None,
                "http.header_read_timeout_ms",
            ),
            (
                vec![("KOOGATE_HTTP_MAX_CONNECTIONS", "0")],
                None,
                "http.max_connections",
            ),
            (
                vec![("KOOGATE_FRONTEND_URL", "app/{instanceId}")],
                None,
                "frontend_url/admin_url/app",
            ),
            (vec![], Some("[http]\nmax_body = 1\n"), "http.max_body"),
            (
                vec![("KOOGATE_SAAS_V1_ENCRYPT_TYPE", "AES")],
                None,
                "saas_v1.encrypt_type",
            ),
            (
                vec![("KOOGATE_SAAS_V2_ENCRYPT_TYPE", "3")],
                None,
                "saas_v2.encrypt_type",
            ),
            (
                vec![("KOOGATE_SAAS_V1_TIMESTAMP_WINDOW_SECS", "soon")],
                None,
                "KOOGATE_SAAS_V1_TIMESTAMP_WINDOW_SECS",
            ),
            (
                vec![("KOOGATE_MARKETPLACE_URL", "http://mkt.example.com")],
                None,
                "marketplace.url",
            ),
            (
                vec![("KOOGATE_MARKETPLACE_FALLBACK_URL", "ftp://mkt.example.com")],
                None,
                "marketplace.fallback_url",
            ),
            (
                vec![("KOOGATE_JOBS_LEASE_MS", "1000")],
                None,
                "jobs.lease_ms",
            ),
            (
                vec![("KOOGATE_JOBS_MAX_ATTEMPTS", "0")],
                None,
                "jobs.max_attempts",
            ),
            (
                vec![("KOOGATE_MARKETPLACE_AK", "ak-only")],
                None,
                "KOOGATE_MARKETPLACE_SK",
            ),
            (
                vec![],
                Some("[marketplace]\nsk = \"x\"\n"),
                "marketplace.sk",
            ),
            (vec![], Some("listen = 8080\n"), "listen"),
        ];
        for (vars, file, key) in cases {
            let path = file.map(|text| {
                let p = dir.path().join("c.toml");
                std::fs::write(&p, text).unwrap();
                p
            });
            let e = load(&vars, path.as_deref()).unwrap_err();
            assert_eq!(e.key, key, "{e}");
        }
    }

    #[test]
    fn event_and_api_settings_are_checked_at_start() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let ok = load(
            &[
                ("KOOGATE_EVENTS_URL", "https://app.example.com/hooks"),
                ("KOOGATE_EVENTS_SECRET", &format!("{secret}, {secret}")),
                ("KOOGATE_EVENTS_RETRY_SCHEDULE", "5s, 1m"),
                ("KOOGATE_API_TOKEN", "t1,t2"),
                ("KOOGATE_ADMIN_LISTEN", "127.0.0.1:9001"),
                ("KOOGATE_PROVISIONING", "app"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(ok.event_secrets.len(), 2);
        assert_eq!(ok.api_tokens.0.len(), 2);
        assert_eq!(ok.provisioning, ProvisioningMode::App);
        assert_eq!(
            ok.event_schedule().unwrap().waits,
            Some(vec![Duration::from_secs(5), Duration::from_secs(60)])
        );
        let shown = format!("{ok:?}");
        assert!(
            !shown.contains("MfKQ9r8") && !shown.contains("t1,t2"),
            "{shown}"
        );

        type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
        let cases: &[Case] = &[
            (
                &[
                    ("KOOGATE_EVENTS_URL", "http://app.example.com/hooks"),
                    ("KOOGATE_EVENTS_SECRET", secret),
                ],
                "events.url",
                "must be https://",
            ),
            (
                &[("KOOGATE_EVENTS_URL", "https://app.example.com/hooks")],
                "KOOGATE_EVENTS_SECRET",
                "is missing",
            ),
            (
                &[("KOOGATE_EVENTS_SECRET", "not-a-secret")],
                "KOOGATE_EVENTS_SECRET",
                "must start with whsec_",
            ),
            (
                &[("KOOGATE_EVENTS_SECRET", "whsec_c2hvcnQ=")],
                "KOOGATE_EVENTS_SECRET",
                "24 to 64 bytes",
            ),
            (
                &[("KOOGATE_EVENTS_MAX_AGE", "three days")],
                "events.max_age",
                "is not a duration",
            ),
            (
                &[("KOOGATE_EVENTS_RETRY_SCHEDULE", "5s,0s")],
                "events.retry_schedule",
                "longer than 0",
            ),
            (
                &[("KOOGATE_USAGE_WINDOW", "week")],
                "usage.window (KOOGATE_USAGE_WINDOW)",
                "unknown variant",
            ),
            (
                &[("KOOGATE_PROVISIONING", "manual")],
                "provisioning (KOOGATE_PROVISIONING)",
                "unknown variant",
            ),
            (
                &[("KOOGATE_LOG_FORMAT", "xml")],
                "log.format (KOOGATE_LOG_FORMAT)",
                "expected `text` or `json`",
            ),
            (
                &[("KOOGATE_LISTEN", "nonsense")],
                "listen (KOOGATE_LISTEN)",
                "socket address",
            ),
            (
                &[
                    ("KOOGATE_PROVISIONING", "app"),
                    ("KOOGATE_PROVISIONING_WAIT_MS", "3600"),
                ],
                "provisioning_wait_ms",
                "shorter than",
            ),
            (
                &[("KOOGATE_JOBS_CONCURRENCY", "0")],
                "jobs.concurrency",
                "between 1 and 64",
            ),
        ];
        for (vars, key, problem) in cases {
            let error = load(vars, None).unwrap_err();
            assert_eq!(error.key, *key, "{vars:?}: {error}");
            assert!(error.problem.contains(problem), "{vars:?}: {error}");
            assert!(!error.to_string().contains("MfKQ9r8"), "{error}");
        }
        // Loopback may be plain http, for an app on the same machine.
        assert!(
            load(
                &[
                    ("KOOGATE_EVENTS_URL", "http://127.0.0.1:3000/hooks"),
                    ("KOOGATE_EVENTS_SECRET", secret)
                ],
                None
            )
            .is_ok()
        );
    }

    #[test]
    fn the_license_key_is_kept_beside_sqlite_and_nowhere_on_postgres() {
        use crate::domain::license_request::Mode;
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db/koogate.db", dir.path().display());
        let mut s = load(&[("KOOGATE_DATABASE_URL", &url)], None).unwrap();
        assert_eq!(s.license.mode, Mode::Signed, "signed works out of the box");
        let (path, created) = s.prepare_license_key().unwrap().unwrap();
        assert!(created && path.ends_with("db/license-signing-key.pem"));
        let public = s.license_key.as_ref().unwrap().public();
        let mut again = load(&[("KOOGATE_DATABASE_URL", &url)], None).unwrap();
        assert_eq!(again.prepare_license_key().unwrap(), Some((path, false)));
        assert_eq!(again.license_key.unwrap().public(), public, "the same key");

        let mut pg = load(&[("KOOGATE_DATABASE_URL", "postgres://db/k")], None).unwrap();
        assert_eq!(pg.prepare_license_key().unwrap(), None);
        assert!(pg.license_key.is_none());
        let mut app = load(
            &[
                ("KOOGATE_DATABASE_URL", &url),
                ("KOOGATE_LICENSE_MODE", "app"),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            app.prepare_license_key().unwrap(),
            None,
            "app mode signs nothing"
        );
        assert!(load(&[("KOOGATE_LICENSE_MODE", "magic")], None).is_err());
    }

    #[test]
    fn debug_output_never_shows_keys() {
        let s = load(
            &[
                ("KOOGATE_ACCESS_KEY", "super-secret-key"),
                ("KOOGATE_MARKETPLACE_AK", "HPUAEXAMPLE"),
                ("KOOGATE_MARKETPLACE_SK", "super-secret-sk"),
            ],
            None,
        )
        .unwrap();
        let debug = format!("{s:?}");
        assert!(!debug.contains("super-secret-key") && !debug.contains("super-secret-sk"));
    }

    #[test]
    fn marketplace_settings_and_credentials() {
        let defaults = load(&[], None).unwrap();
        assert_eq!(defaults.marketplace.url, "https://mkt.myhuaweicloud.com");
        assert_eq!(
            defaults.marketplace.fallback_url,
            "https://mkt.myhuaweicloud.cn"
        );
        assert!(defaults.marketplace_credentials.is_none());

        let dir = tempfile::tempdir().unwrap();
        let sk_file = dir.path().join("sk");
        std::fs::write(&sk_file, "sk-from-file\n").unwrap();
        let s = load(
            &[
                ("KOOGATE_MARKETPLACE_URL", "http://127.0.0.1:9090"),
                ("KOOGATE_MARKETPLACE_AK", "HPUAEXAMPLE"),
                ("KOOGATE_MARKETPLACE_SK_FILE", sk_file.to_str().unwrap()),
                ("KOOGATE_JOBS_LEASE_MS", "17000"),
            ],
            None,
        )
        .unwrap();
        let credentials = s.marketplace_credentials.as_ref().expect("both set");
        assert_eq!(credentials.ak, "HPUAEXAMPLE");
        assert_eq!(credentials.sk.expose_secret(), "sk-from-file");
        assert_eq!(
            s.marketplace.url, "http://127.0.0.1:9090",
            "http on loopback is the mock"
        );
        assert_eq!(s.job_policy().attempt_timeout.as_millis(), 16_500);
    }

    #[test]
    fn database_urls_show_without_their_password() {
        for (url, shown) in [
            (
                "postgres://koogate:s3cret@db:5432/k",
                "postgres://koogate:[redacted]@db:5432/k",
            ),
            // An `@` in the password: the last one ends the user part.
            (
                "postgres://koogate:p@ss@db/k",
                "postgres://koogate:[redacted]@db/k",
            ),
            (
                "postgresql://u:pw@db/k?sslmode=require&application_name=a@b",
                "postgresql://u:[redacted]@db/k?sslmode=require&application_name=a@b",
            ),
            (
                "postgres://db/k?user=u&password=s3cret",
                "postgres://db/k?user=u&password=[redacted]",
            ),
            ("postgres://db/k?x=a@b", "postgres://db/k?x=a@b"),
            ("sqlite://data/koogate.db", "sqlite://data/koogate.db"),
            ("sqlite:koogate.db", "sqlite:koogate.db"),
            ("postgres:u:s3cret@db", "postgres:[redacted]"),
            ("not a url s3cret", ":[redacted]"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
            assert!(!redact_url(url).contains("s3cret"), "{url}");
        }
    }

    #[test]
    fn the_database_url_is_a_secret_with_a_file_form() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("url");
        std::fs::write(&file, "postgres://koogate:s3cret@db/k\n").unwrap();
        let s = load(
            &[("KOOGATE_DATABASE_URL_FILE", file.to_str().unwrap())],
            None,
        )
        .unwrap();
        assert_eq!(s.database_url.expose(), "postgres://koogate:s3cret@db/k");
        let debug = format!("{s:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("postgres://koogate:[redacted]@db/k"));
        let both = load(
            &[
                ("KOOGATE_DATABASE_URL", "postgres://db/k"),
                ("KOOGATE_DATABASE_URL_FILE", file.to_str().unwrap()),
            ],
            None,
        )
        .unwrap_err();
        assert_eq!(both.key, "KOOGATE_DATABASE_URL");
        let bad = load(&[("KOOGATE_DATABASE_URL", "mysql://u:s3cret@db/k")], None).unwrap_err();
        assert!(!bad.to_string().contains("s3cret"), "{bad}");
    }

    #[test]
    fn the_data_key_comes_from_the_environment_a_file_or_beside_sqlite() {
        let key = crate::store::seal::DataKey::generate();
        let pg = load(
            &[
                ("KOOGATE_DATABASE_URL", "postgres://u:pw@db/k"),
                ("KOOGATE_DATA_KEY", &key),
            ],
            None,
        )
        .unwrap();
        let (sealer, file) = pg.sealer().unwrap();
        assert!(file.is_none());
        assert!(!format!("{pg:?}").contains(&key), "never printed");
        assert!(!format!("{sealer:?}").contains(&key), "never printed");

        let none = load(&[("KOOGATE_DATABASE_URL", "postgres://u:pw@db/k")], None).unwrap();
        let error = none.sealer().unwrap_err();
        assert_eq!(error.key, "KOOGATE_DATA_KEY", "{error}");

        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db/koogate.db", dir.path().display());
        let lite = load(&[("KOOGATE_DATABASE_URL", &url)], None).unwrap();
        let (first, file) = lite.sealer().unwrap();
        let (path, created) = file.unwrap();
        assert!(created && path.ends_with("db/data-key"));
        let (second, file) = lite.sealer().unwrap();
        assert_eq!(file, Some((path.clone(), false)));
        assert_eq!(first.current_id(), second.current_id(), "the same key");

        let key_file = dir.path().join("key");
        std::fs::write(&key_file, format!("{key}\n")).unwrap();
        let old = crate::store::seal::DataKey::generate();
        let from_file = load(
            &[
                ("KOOGATE_DATABASE_URL", &url),
                ("KOOGATE_DATA_KEY_FILE", key_file.to_str().unwrap()),
                ("KOOGATE_DATA_KEY_OLD", &format!("{old}, ")),
            ],
            None,
        )
        .unwrap();
        assert_eq!(
            from_file.sealer().unwrap().0.current_id(),
            sealer.current_id()
        );
        assert_eq!(from_file.old_data_keys.len(), 1);
        let short = load(&[("KOOGATE_DATA_KEY", "c2hvcnQ=")], None).unwrap_err();
        assert_eq!(short.key, "KOOGATE_DATA_KEY");
        assert!(short.problem.contains("32 bytes"), "{short}");
    }

    #[test]
    fn buyer_data_is_kept_thirty_days_after_a_release_by_default() {
        let s = load(&[], None).unwrap();
        assert_eq!(
            s.buyer_data_retention(),
            Some(Duration::from_secs(30 * 86_400))
        );
        let keep = load(&[("KOOGATE_BUYER_DATA_RETENTION_DAYS", "0")], None).unwrap();
        assert_eq!(keep.buyer_data_retention(), None);
    }
}
