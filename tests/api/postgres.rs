//! A brand-new, empty PostgreSQL database for every test that asks: on the server named by
//! `DATABASE_URL` when it is set, otherwise in a throwaway cluster that this test process starts
//! once from the installed server binaries and that dies with the process.
//!
//! No test is skipped for want of PostgreSQL: without `DATABASE_URL` and without the binaries,
//! `fresh_database` panics with a message that says what to install.

use std::env::{self, VarError};
use std::fs::{self, File};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

/// The panic message when there is neither a server to use nor one to start.
const NOT_INSTALLED: &str = "PostgreSQL is needed for the PostgreSQL half of the tests: \
    set DATABASE_URL to a server where this user may CREATE DATABASE, or install the server \
    binaries (Debian/Ubuntu: apt-get install postgresql)";

/// Throwaway clusters live in `<temp dir>/koogate-test-pg-<pid>-<random>`: the pid tells a later
/// run whether the directory's owner is still alive.
const CLUSTER_DIR_PREFIX: &str = "koogate-test-pg-";

/// How long a throwaway server may take to accept connections before the tests give up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How many ports to try: another process may take the free port we picked before the server
/// binds it.
const START_ATTEMPTS: u32 = 3;

/// Creates a brand-new, empty database for the calling test alone and returns its connection URL.
///
/// The database is named `koogate_test_<uuid>` and is created on the server in `DATABASE_URL`
/// when that is set and not empty, otherwise in this process's throwaway cluster, which the first
/// call starts. Safe to call from many tests, each on its own tokio runtime, at once: every call
/// uses its own short-lived connection. Databases are not dropped afterwards.
///
/// # Panics
/// When no PostgreSQL can be reached or started, with a message saying what to do about it.
pub async fn fresh_database() -> String {
    let (server, whence) = match env::var("DATABASE_URL") {
        Ok(url) if !url.is_empty() => (url, "the server in DATABASE_URL"),
        Ok(_) | Err(VarError::NotPresent) => {
            let started = tokio::task::spawn_blocking(throwaway_cluster)
                .await
                .expect("the task starting the throwaway PostgreSQL did not finish");
            let url = started.unwrap_or_else(|message| panic!("{message}"));
            (url, "the throwaway PostgreSQL")
        }
        Err(VarError::NotUnicode(_)) => panic!("DATABASE_URL is not valid UTF-8"),
    };

    let name = format!("koogate_test_{}", Uuid::new_v4().simple());
    // Rewrite first, so that an unusable URL fails before anything is created.
    let url = with_database(&server, &name).unwrap_or_else(|message| panic!("{message}"));

    let mut connection = PgConnection::connect(&server)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {whence}: {e}"));
    connection
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .unwrap_or_else(|e| panic!("cannot create database {name} on {whence}: {e}"));
    // The database exists whatever closing says; a failed goodbye is no reason to fail a test.
    let _ = connection.close().await;

    url
}

/// `url` with its database replaced by `database`.
///
/// The path becomes `/<database>` whether or not `url` had one, and `dbname` query parameters,
/// which would override the path, are dropped; user, password, host, port, the other query
/// parameters and any fragment are kept byte for byte. `database` must not need
/// percent-encoding. The error never repeats the URL, which may hold a password.
pub fn with_database(url: &str, database: &str) -> Result<String, String> {
    let after_scheme = ["postgres://", "postgresql://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme).map(|rest| (*scheme, rest)));
    let Some((scheme, rest)) = after_scheme else {
        return Err("DATABASE_URL must be a URL starting with postgres:// or postgresql://".into());
    };

    // RFC 3986: the authority runs to the first '/', '?' or '#'; the path to the first '?' or
    // '#'; the query to the first '#'.
    let (rest, fragment) = match rest.find('#') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let authority = rest
        .split_once('/')
        .map_or(rest, |(authority, _path)| authority);

    let kept: Vec<&str> = query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .filter(|pair| !pair.is_empty())
        .filter(|pair| pair.split('=').next() != Some("dbname"))
        .collect();
    let query = if kept.is_empty() {
        String::new()
    } else {
        format!("?{}", kept.join("&"))
    };

    Ok(format!("{scheme}{authority}/{database}{query}{fragment}"))
}

/// The admin URL of this process's throwaway cluster, which the first call starts; or why it
/// could not be started. Blocks; every caller after the first gets the same answer.
fn throwaway_cluster() -> Result<String, String> {
    static CLUSTER: OnceLock<Result<String, String>> = OnceLock::new();
    CLUSTER
        .get_or_init(|| {
            let (report, started) = mpsc::channel();
            thread::Builder::new()
                .name("throwaway-postgres".into())
                .spawn(move || hold_cluster(report))
                .map_err(|e| format!("cannot start a thread for the throwaway PostgreSQL: {e}"))?;
            started.recv().unwrap_or_else(|_| {
                Err("the thread starting the throwaway PostgreSQL panicked (see above)".into())
            })
        })
        .clone()
}

/// Starts the cluster, reports its URL, and then never returns.
///
/// The server's parent-death signal fires when the thread that spawned it ends, not when the
/// process does, so this thread must live as long as the process: then the server goes down with
/// the process however that ends (normal exit, panic, SIGKILL).
fn hold_cluster(report: mpsc::Sender<Result<String, String>>) {
    match Cluster::start() {
        Ok(cluster) => {
            let _ = report.send(Ok(cluster.url.clone()));
            loop {
                thread::park();
            }
        }
        Err(message) => {
            let _ = report.send(Err(message));
        }
    }
}

/// A running throwaway cluster. Never dropped while the process lives: its directory is removed
/// by a later run (see `remove_stale_clusters`).
struct Cluster {
    url: String,
    _dir: tempfile::TempDir,
    _server: Child,
}

impl Cluster {
    fn start() -> Result<Cluster, String> {
        let began = Instant::now();
        let binaries = Binaries::find().ok_or_else(|| NOT_INSTALLED.to_string())?;
        let user = server_user()?;
        remove_stale_clusters();

        let dir = tempfile::Builder::new()
            .prefix(&format!("{CLUSTER_DIR_PREFIX}{}-", std::process::id()))
            .tempdir()
            .map_err(|e| format!("cannot create a directory for the throwaway PostgreSQL: {e}"))?;
        if let Some(user) = user {
            chown(dir.path(), Some(user.uid), Some(user.gid)).map_err(|e| {
                format!(
                    "cannot hand {} to the postgres user: {e}",
                    dir.path().display()
                )
            })?;
        }
        let data = dir.path().join("data");

        let initdb = server_command(&binaries.initdb, dir.path(), user)
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8"])
            .arg("--locale=C")
            .output()
            .map_err(|e| format!("cannot run {}: {e}", binaries.initdb.display()))?;
        if !initdb.status.success() {
            return Err(format!(
                "{} failed ({}):\n{}{}",
                binaries.initdb.display(),
                initdb.status,
                String::from_utf8_lossy(&initdb.stdout),
                String::from_utf8_lossy(&initdb.stderr),
            ));
        }

        // The readiness probe is a real connection, which needs a runtime of this thread's own.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot build a runtime to wait for PostgreSQL: {e}"))?;
        let log_path = dir.path().join("server.log");
        for attempt in 1..=START_ATTEMPTS {
            let port = free_port()?;
            let log = File::create(&log_path)
                .and_then(|log| Ok((log.try_clone()?, log)))
                .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
            let mut server = server_command(&binaries.postgres, dir.path(), user)
                .arg("-D")
                .arg(&data)
                .arg("-p")
                .arg(port.to_string())
                .arg("-k")
                .arg(dir.path())
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "fsync=off"])
                .args(["-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"])
                .args(["-c", "max_connections=200"])
                .stdout(log.0)
                .stderr(log.1)
                .spawn()
                .map_err(|e| format!("cannot run {}: {e}", binaries.postgres.display()))?;

            let url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
            let failure = match wait_until_ready(&runtime, &mut server, &url) {
                Ok(()) => {
                    eprintln!(
                        "throwaway PostgreSQL ready at {url} in {} ms (log: {})",
                        began.elapsed().as_millis(),
                        log_path.display(),
                    );
                    return Ok(Cluster {
                        url,
                        _dir: dir,
                        _server: server,
                    });
                }
                Err(failure) => failure,
            };
            let _ = server.kill();
            let _ = server.wait();
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            let port_taken = log.contains("could not create any TCP/IP sockets");
            if !(matches!(failure, NotReady::Exited(_)) && port_taken && attempt < START_ATTEMPTS) {
                return Err(format!(
                    "the throwaway PostgreSQL ({}) {failure}; its log:\n{log}",
                    binaries.postgres.display(),
                ));
            }
        }
        unreachable!("the last attempt returns")
    }
}

/// Why a server did not come up.
enum NotReady {
    Exited(ExitStatus),
    TimedOut(String),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::Exited(status) => write!(f, "exited at start-up ({status})"),
            NotReady::TimedOut(last_error) => write!(
                f,
                "did not accept connections within {} s (last error: {last_error})",
                START_TIMEOUT.as_secs()
            ),
        }
    }
}

/// Polls with real connections until `server` accepts one, exits, or `START_TIMEOUT` passes.
fn wait_until_ready(
    runtime: &tokio::runtime::Runtime,
    server: &mut Child,
    url: &str,
) -> Result<(), NotReady> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Ok(Some(status)) = server.try_wait() {
            return Err(NotReady::Exited(status));
        }
        let attempt = runtime.block_on(async {
            let connection =
                tokio::time::timeout(Duration::from_secs(2), PgConnection::connect(url)).await;
            match connection {
                Ok(Ok(connection)) => {
                    let _ = connection.close().await;
                    Ok(())
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err("connecting took over 2 s".to_string()),
            }
        });
        match attempt {
            Ok(()) => return Ok(()),
            Err(last_error) if Instant::now() >= deadline => {
                return Err(NotReady::TimedOut(last_error));
            }
            // The pause between probes, not a guess at how long start-up takes.
            Err(_) => thread::sleep(Duration::from_millis(25)),
        }
    }
}

/// The server binaries, from one directory so that they are of one version.
struct Binaries {
    initdb: PathBuf,
    postgres: PathBuf,
}

impl Binaries {
    /// The first directory on `PATH` holding both `initdb` and `postgres`, else Debian's
    /// `/usr/lib/postgresql/<version>/bin` of the highest version that has them (Debian keeps
    /// them off `PATH`).
    fn find() -> Option<Binaries> {
        let path = env::var_os("PATH").unwrap_or_default();
        env::split_paths(&path)
            .chain(debian_bin_dirs())
            .map(|dir| Binaries {
                initdb: dir.join("initdb"),
                postgres: dir.join("postgres"),
            })
            .find(|found| is_executable(&found.initdb) && is_executable(&found.postgres))
    }
}

/// Debian's per-version binary directories, highest version first.
fn debian_bin_dirs() -> Vec<PathBuf> {
    let mut versions: Vec<(Vec<u32>, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let version = name
                .split('.')
                .map(|part| part.parse().ok())
                .collect::<Option<Vec<u32>>>()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// A system user to run the server as.
#[derive(Clone, Copy)]
struct User {
    uid: u32,
    gid: u32,
}

/// Who runs initdb and postgres: this process's own user (`None`), or, when that is root, which
/// both refuse to run as, the `postgres` system user.
fn server_user() -> Result<Option<User>, String> {
    if effective_uid()? != 0 {
        return Ok(None);
    }
    let passwd = fs::read_to_string("/etc/passwd").unwrap_or_default();
    passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            match fields.as_slice() {
                ["postgres", _password, uid, gid, ..] => Some(User {
                    uid: uid.parse().ok()?,
                    gid: gid.parse().ok()?,
                }),
                _ => None,
            }
        })
        .map(Some)
        .ok_or_else(|| {
            "the tests run as root, and initdb and postgres refuse to run as root, but there is \
             no `postgres` user in /etc/passwd to run them as: create that system user \
             (installing the postgresql package does), run the tests as another user, or set \
             DATABASE_URL"
                .to_string()
        })
}

/// This process's effective uid, read from procfs to keep `unsafe` out of the lookup.
fn effective_uid() -> Result<u32, String> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status to learn who runs the tests: {e}"))?;
    // "Uid:\t<real>\t<effective>\t<saved>\t<filesystem>"
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|uids| uids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .ok_or_else(|| "no effective uid in /proc/self/status".to_string())
}

/// A command for a server binary, run in `dir`, as `user` if given, and killed with SIGQUIT when
/// the calling thread ends.
fn server_command(program: &Path, dir: &Path, user: Option<User>) -> Command {
    let mut command = Command::new(program);
    command.current_dir(dir).stdin(Stdio::null());
    if let Some(user) = user {
        // Supplementary groups are dropped too: std clears them when root sets a uid.
        command.uid(user.uid).gid(user.gid);
    }
    die_with_spawning_thread(&mut command);
    command
}

/// Makes the child get SIGQUIT when the spawning thread ends. SIGQUIT is PostgreSQL's immediate
/// shutdown: the postmaster passes it on to every backend and they all exit at once, where
/// SIGKILL would kill only the postmaster and leave its backends behind.
///
/// std runs `pre_exec` closures after it has switched to the command's uid and gid, and that order
/// matters: the kernel clears the parent-death signal whenever the credentials change.
// `unsafe` is needed because `pre_exec` runs code between fork and exec. The closure keeps to
// what is sound there: two async-signal-safe syscalls (prctl, getppid), no allocation, no locks.
#[allow(unsafe_code)]
fn die_with_spawning_thread(command: &mut Command) {
    let parent = std::process::id();
    // SAFETY: see above; prctl and getppid are async-signal-safe and the closure allocates
    // nothing (`from_raw_os_error` does not allocate).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) == -1 {
                return Err(io::Error::last_os_error());
            }
            // The process may have died between fork and prctl, before any signal was armed.
            if libc::getppid() as u32 != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
}

/// A port on 127.0.0.1 that nothing listens on right now.
fn free_port() -> Result<u16, String> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .map_err(|e| format!("cannot find a free port for the throwaway PostgreSQL: {e}"))
}

/// Removes the clusters of test processes that are gone.
///
/// A cluster's directory outlives its process, because the thread holding it never returns and
/// so never drops it; the pid in the name says whether the owner still runs. Our own pid counts
/// as gone, since this runs before our cluster exists (a directory with our pid is from a dead
/// process whose pid was reused). Errors are ignored: a leftover costs only disk space.
fn remove_stale_clusters() {
    if !Path::new("/proc/self").exists() {
        return; // without procfs we cannot tell the living from the dead
    }
    let Ok(entries) = fs::read_dir(env::temp_dir()) else {
        return;
    };
    let own = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name
            .to_str()
            .and_then(|name| name.strip_prefix(CLUSTER_DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
            .and_then(|pid| pid.parse::<u32>().ok());
        let gone = |pid: u32| pid == own || !Path::new("/proc").join(pid.to_string()).exists();
        if pid.is_some_and(gone) {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

// Tests of this module.

#[test]
fn the_database_replaces_the_path_of_every_url_shape() {
    let cases = [
        (
            "postgres://postgres@127.0.0.1:5432/postgres",
            "postgres://postgres@127.0.0.1:5432/fresh",
            "a path is replaced",
        ),
        (
            "postgres://app:s3cr%40t@db.internal:6432",
            "postgres://app:s3cr%40t@db.internal:6432/fresh",
            "a missing path is added, the encoded password is kept",
        ),
        (
            "postgres://localhost/",
            "postgres://localhost/fresh",
            "an empty path is filled",
        ),
        (
            "postgresql://u@h/app?sslmode=require&application_name=ci",
            "postgresql://u@h/fresh?sslmode=require&application_name=ci",
            "the query is kept, and so is the postgresql scheme",
        ),
        (
            "postgres://h:5433?sslmode=disable",
            "postgres://h:5433/fresh?sslmode=disable",
            "a query without a path gets the path before it",
        ),
        (
            "postgres://h/app?dbname=other&sslmode=disable&dbname=x",
            "postgres://h/fresh?sslmode=disable",
            "dbname parameters, which would override the path, are dropped",
        ),
        (
            "postgres://h/app?dbname=other",
            "postgres://h/fresh",
            "a query of only dbname goes entirely",
        ),
        (
            "postgres:///app?host=/var/run/postgresql",
            "postgres:///fresh?host=/var/run/postgresql",
            "a socket URL without authority keeps its host parameter",
        ),
        (
            "postgres://h/a/b#frag",
            "postgres://h/fresh#frag",
            "a fragment is kept",
        ),
    ];
    for (url, expected, why) in cases {
        assert_eq!(
            with_database(url, "fresh").as_deref(),
            Ok(expected),
            "{why}: {url}"
        );
    }
}

#[test]
fn a_url_that_is_not_postgres_is_refused_without_being_repeated() {
    for url in [
        "mysql://root:hunter2@h/db",
        "host=h dbname=db password=hunter2",
        "",
    ] {
        let error = with_database(url, "fresh").expect_err(url);
        assert!(
            !error.contains("hunter2"),
            "the error leaks the URL: {error}"
        );
    }
}

/// The tables, views and sequences in `url`'s database outside the system schemas.
async fn user_relations(url: &str) -> i64 {
    let mut connection = PgConnection::connect(url)
        .await
        .unwrap_or_else(|e| panic!("a fresh database is connectable: {e}"));
    let (count,): (i64,) = sqlx::query_as(
        "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg_toast%'",
    )
    .fetch_one(&mut connection)
    .await
    .expect("counting relations");
    count
}

async fn database_name(url: &str) -> String {
    let mut connection = PgConnection::connect(url).await.expect("connectable");
    let (name,): (String,) = sqlx::query_as("SELECT current_database()")
        .fetch_one(&mut connection)
        .await
        .expect("current_database()");
    name
}

#[tokio::test]
async fn concurrent_fresh_databases_are_distinct_empty_and_connectable() {
    let (first, second) = tokio::join!(fresh_database(), fresh_database());

    assert_ne!(first, second, "two calls got the same URL");
    for url in [&first, &second] {
        let name = database_name(url).await;
        assert!(name.starts_with("koogate_test_"), "unexpected name {name}");
        assert!(url.contains(&format!("/{name}")), "{url} names {name}");
        assert_eq!(user_relations(url).await, 0, "{name} is not empty");
    }

    let mut connection = PgConnection::connect(&first).await.expect("connectable");
    connection
        .execute("CREATE TABLE only_here (id integer)")
        .await
        .expect("a fresh database is writable");
    assert_eq!(user_relations(&first).await, 1);
    assert_eq!(user_relations(&second).await, 0, "one test's table leaked");
}

#[test]
fn tests_on_separate_runtimes_get_databases_at_once() {
    // As cargo test runs them: each test on its own thread with its own runtime, all calling
    // at the same moment, including the first call that may start the throwaway cluster.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            thread::spawn(|| {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime")
                    .block_on(async {
                        let url = fresh_database().await;
                        assert_eq!(user_relations(&url).await, 0);
                        url
                    })
            })
        })
        .collect();
    let mut urls: Vec<String> = threads
        .into_iter()
        .map(|thread| thread.join().expect("a thread panicked"))
        .collect();
    urls.sort();
    urls.dedup();
    assert_eq!(urls.len(), 8, "some threads got the same database");
}
