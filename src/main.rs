//! The `vigil` command: arguments, configuration, logging and exit codes. Everything else is in the library.
//!
//! Exit codes (also in README.md):
//! - 0: clean exit (including after SIGINT/SIGTERM)
//! - 1: the daemon failed while running (a port in use, the store unwritable, …): the message says what to change
//! - 2: bad command-line arguments
//! - 64: the configuration is invalid (file, key path and reason are printed)
//! - 65: `replay` or `decode` could not read its input
//! - 69: `self-test` could not run the test (the daemon unreachable, sign-in refused, not an admin); a test that
//!   ran and failed a hop exits 1

use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

use vigil::config::{Config, DEFAULT_CONFIG};

/// Exit code for an invalid configuration.
const EXIT_CONFIG: u8 = 64;
/// Exit code for unreadable replay input.
const EXIT_DATA: u8 = 65;

#[derive(Parser)]
#[command(
    name = "vigil",
    version,
    about = "Vital-signs alarm daemon for infusion chairs (a secondary notification aid)"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run {
        /// Configuration file. Without it Vigil runs the built-in demo (config/demo.toml: simulated chairs,
        /// loopback only, actions without sign-in).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a configuration file and print its beds and sources.
    CheckConfig {
        /// The file.
        path: PathBuf,
    },
    /// Print the embedded default configuration.
    PrintDefaultConfig,
    /// Run the alarm engine over a recording and print every alarm event as JSON lines.
    Replay(vigil::replay::ReplayArgs),
    /// Decode a raw device capture and print one JSON line per reading and per device alarm, then a summary of
    /// frames good and bad.
    Decode {
        /// masimo, nonin, hl7, intellivue (the MIB/RS-232 byte stream from the monitor) or s5.
        #[arg(long)]
        format: String,
        /// The capture.
        file: PathBuf,
    },
    /// Read a password on standard input and print its argon2 hash for `[[users]] password_hash`.
    HashPassword,
    /// Send a marked test alarm through a running daemon's whole alarm path for one bed (engine, store, MQTT,
    /// dashboard, and this command's own MQTT subscriber) and report each hop with its time. Exit 0 when every
    /// hop passed, 1 when one failed, 69 when the test could not run (daemon unreachable, sign-in refused, not an
    /// admin).
    SelfTest {
        /// The bed to test. Default: the daemon's first bed.
        #[arg(long)]
        bed: Option<String>,
        /// The daemon's configuration file: the dashboard's address is taken from `dashboard.listen`.
        #[arg(long, short, conflicts_with = "url")]
        config: Option<PathBuf>,
        /// The dashboard's address instead of --config, e.g. http://127.0.0.1:8080.
        #[arg(long)]
        url: Option<String>,
        /// An admin of the configuration (`[[users]]`); the password is read from the environment variable
        /// VIGIL_PASSWORD, else from the first line of standard input. Without it only the loopback demo
        /// (actions without sign-in) lets the test run.
        #[arg(long)]
        user: Option<String>,
        /// Print the report as one JSON object instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Write the manual pages (vigil.1, vigil-run.1, …) and shell completions (bash, zsh, fish) into a directory.
    /// Used to make `packaging/man/` and `packaging/completions/`.
    #[command(hide = true)]
    Man {
        /// Where to write them (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the Mosquitto ACL that gives an external broker Vigil's topic rights (nurses and admins publish
    /// commands only on cmd/{bed}/{their name}); the commands that make its password file go to stderr.
    MosquittoAcl {
        /// The configuration file.
        path: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log_format);
    match cli.command.unwrap_or(Command::Run { config: None }) {
        Command::Run { config } => run(config),
        Command::CheckConfig { path } => check_config(&path),
        Command::PrintDefaultConfig => {
            print!("{DEFAULT_CONFIG}");
            ExitCode::SUCCESS
        }
        Command::Replay(args) => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            match vigil::replay::run(&args, &mut out) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigil replay: {e}");
                    ExitCode::from(EXIT_DATA)
                }
            }
        }
        Command::Decode { format, file } => {
            let stdout = std::io::stdout();
            let mut out = stdout.lock();
            match vigil::decode::run(&format, &file, &mut out) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vigil decode: {e}");
                    ExitCode::from(EXIT_DATA)
                }
            }
        }
        Command::HashPassword => hash_password(),
        Command::SelfTest { bed, config, url, user, json } => self_test(bed, config, url, user, json),
        Command::Man { out } => match write_manuals(&out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vigil man: {}: {e}", out.display());
                ExitCode::FAILURE
            }
        },
        Command::MosquittoAcl { path } => match load(Some(&path)) {
            Ok(config) => {
                print!("{}", vigil::mqtt::acl::mosquitto_acl(&config, &path.display().to_string()));
                eprintln!("# Then create the password file (each command asks for that account's password):");
                eprint!("{}", vigil::mqtt::acl::passwd_commands(&config, "/etc/mosquitto/passwd"));
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    }
}

/// Manual pages from the clap definitions (one per visible subcommand) and completion scripts.
fn write_manuals(out: &Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(out)?;
    clap_mangen::generate_to(Cli::command(), out)?;
    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "vigil", &completions)?;
    }
    Ok(())
}

fn init_tracing(format: LogFormat) {
    // The embedded broker logs every client disconnect (and Vigil's own readiness probe) as an error; Vigil reports
    // broker failures itself, so rumqttd is silent unless RUST_LOG asks for it (`RUST_LOG=info,rumqttd=warn`).
    // Except one warning: a subscriber that fell further behind than its filter's commit log skipped messages.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,rumqttd=off,rumqttd::segments=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn load(path: Option<&Path>) -> Result<Config, ExitCode> {
    let result = match path {
        Some(p) => Config::load(p),
        None => {
            tracing::warn!(
                "no --config: running the built-in demo (config/demo.toml: simulated chairs, loopback only, actions \
                 without sign-in); for a ward run `vigil run --config FILE`, starting from `vigil print-default-config`"
            );
            Ok(Config::demo())
        }
    };
    result.map_err(|e| {
        eprintln!("vigil: invalid configuration: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn run(path: Option<PathBuf>) -> ExitCode {
    let config = match load(path.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    for (key, why) in config.warnings() {
        tracing::warn!(%key, "configuration: {why}");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vigil: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        tokio::spawn(explain_sighup(path.clone()));
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("stop requested: draining and publishing offline status");
            signals.cancel();
        });
        vigil::run(config, shutdown).await
    });
    // Background threads (the embedded broker's) must not hold the exit: the runtime is dropped without waiting.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ vigil::RunError::Tls(_)) => {
            eprintln!("vigil: invalid configuration: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("vigil: {e}");
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP does not reload: users, profiles and limits are read at start. It says so, checks the file on disk
/// (so an operator knows whether a restart would succeed) and changes nothing. See docs/operations.md.
async fn explain_sighup(path: Option<PathBuf>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut hup) = signal(SignalKind::hangup()) else { return };
        while hup.recv().await.is_some() {
            let verdict = match &path {
                None => "the built-in demo has no file to check".to_owned(),
                Some(p) => {
                    let p = p.clone();
                    match tokio::task::spawn_blocking(move || Config::load(&p)).await {
                        Ok(Ok(_)) => "the file on disk is valid: a restart would take it".to_owned(),
                        Ok(Err(e)) => format!("the file on disk is INVALID, a restart would fail: {e}"),
                        Err(e) => format!("could not check the file: {e}"),
                    }
                }
            };
            tracing::warn!(
                "SIGHUP: configuration is not reloaded while running (users, profiles, limits, beds are read at \
                 start); restart to apply changes (`systemctl restart vigil`: live alarms, sessions and bed_seq come \
                 back from the store); {verdict}"
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

fn check_config(path: &Path) -> ExitCode {
    let config = match load(Some(path)) {
        Ok(c) => c,
        Err(code) => return code,
    };
    // The listeners' TLS files are read as `vigil run` would read them, so a bad certificate or key shows here.
    let dashboard_tls = config.dashboard.tls.as_ref().map(|t| ("dashboard.tls", t));
    let mllp_tls = config.mllp.as_ref().and_then(|m| m.tls.as_ref()).map(|t| ("mllp.tls", t));
    for (at, tls) in dashboard_tls.into_iter().chain(mllp_tls) {
        if let Err(e) = vigil::tls::load_server_config(&config, at, tls, &[]) {
            eprintln!("vigil: invalid configuration: {}: {e}", path.display());
            return ExitCode::from(EXIT_CONFIG);
        }
    }
    println!("{}: ok (site {}, ward {})", path.display(), config.site.name, config.site.ward);
    for (key, why) in config.warnings() {
        println!("warning: {key}: {why}");
    }
    for bed in &config.beds {
        println!("bed {} \"{}\" profile {}", bed.id, bed.label(), bed.profile);
        for src in &bed.sources {
            let detail = match src.kind {
                vigil::config::SourceKind::Serial => {
                    format!("{} at {} baud", src.path.as_deref().unwrap_or("?"), src.baud())
                }
                vigil::config::SourceKind::Tcp => {
                    format!("device server at {}", src.address.as_deref().unwrap_or("?"))
                }
                vigil::config::SourceKind::Udp => {
                    format!("IntelliVue LAN at {}", src.address.as_deref().unwrap_or("?"))
                }
                vigil::config::SourceKind::Mllp => format!("device_id {}", src.device_id.as_deref().unwrap_or("?")),
                vigil::config::SourceKind::Simulated => format!(
                    "scenario {} seed {} speed {}",
                    src.scenario.as_deref().unwrap_or("calm-session"),
                    src.seed(),
                    src.speed()
                ),
            };
            println!("  source {} {}: {}", src.kind.name(), src.device.name(), detail);
        }
    }
    ExitCode::SUCCESS
}

/// Exit code when `vigil self-test` could not run the test at all (EX_UNAVAILABLE).
const EXIT_UNAVAILABLE: u8 = 69;

fn self_test(
    bed: Option<String>,
    config: Option<PathBuf>,
    url: Option<String>,
    user: Option<String>,
    json: bool,
) -> ExitCode {
    let url = match (url, config) {
        (Some(u), _) => u,
        (None, Some(path)) => match load(Some(&path)) {
            Ok(c) if c.dashboard.tls.is_some() => {
                eprintln!("vigil self-test: {}: dashboard.tls is set; https dashboards are not supported by vigil self-test yet", path.display());
                return ExitCode::from(EXIT_UNAVAILABLE);
            }
            Ok(c) => vigil::selftest::client::url_of_listen(&c.dashboard.listen),
            Err(code) => return code,
        },
        (None, None) => {
            eprintln!("vigil self-test: give --config FILE or --url http://HOST:PORT");
            return ExitCode::from(2);
        }
    };
    let credentials = match user {
        None => None,
        Some(name) => {
            let password = match std::env::var("VIGIL_PASSWORD") {
                Ok(p) => p,
                Err(_) => {
                    let mut line = String::new();
                    if let Err(e) = std::io::stdin().read_line(&mut line) {
                        eprintln!("vigil self-test: cannot read the password on standard input: {e}");
                        return ExitCode::from(2);
                    }
                    line.trim_end_matches(['\r', '\n']).to_owned()
                }
            };
            if password.is_empty() {
                eprintln!("vigil self-test: no password (set VIGIL_PASSWORD or give it on standard input)");
                return ExitCode::from(2);
            }
            Some((name, password))
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vigil self-test: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let target = vigil::selftest::client::Target { url, credentials, bed };
    let result = runtime.block_on(vigil::selftest::client::run(&target));
    runtime.shutdown_background();
    match result {
        Ok(report) => {
            if json {
                println!("{}", serde_json::to_string(&report).unwrap_or_default());
            } else {
                print!("{}", vigil::selftest::client::table(&report));
            }
            if report.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("vigil self-test: {e}");
            ExitCode::from(EXIT_UNAVAILABLE)
        }
    }
}

fn hash_password() -> ExitCode {
    let mut password = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut password) {
        eprintln!("vigil hash-password: cannot read standard input: {e}");
        return ExitCode::FAILURE;
    }
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        eprintln!("vigil hash-password: the password on standard input is empty");
        return ExitCode::from(2);
    }
    match vigil::auth::hash_password(password) {
        Ok(hash) => {
            println!("{hash}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("vigil hash-password: {e}");
            ExitCode::FAILURE
        }
    }
}
