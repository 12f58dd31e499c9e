//! `vigil-sim`: a fake bedside monitor on the command line. Thin: parses arguments and hands over to the library.

use std::process::ExitCode;
use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};
use clap::Parser;
use vigil_sim::alert_manager::AlertManagerOptions;
use vigil_sim::output::{self, OutputSpec, Pty};
use vigil_sim::{scenario, Device, FeedOptions, Simulation, Speed};

/// Exit code for bad command-line input (BSD EX_USAGE), as the daemon uses for a bad configuration.
const EXIT_USAGE: u8 = 64;

/// A bedside-monitor simulator speaking real device protocols (Masimo ASCII 1, Nonin #8, HL7 PCD-01 over MLLP,
/// GE Datex-Ohmeda S/5 DRI).
#[derive(Debug, Parser)]
#[command(
    name = "vigil-sim",
    version,
    about,
    after_help = EXAMPLES,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Instead of a monitor, play another party on the network.
    #[command(subcommand)]
    command: Option<Command>,
    /// Print the bundled scenarios with a one-line description and exit.
    #[arg(long)]
    list_scenarios: bool,
    /// Scenario to run (see --list-scenarios).
    #[arg(long, value_name = "NAME", required_unless_present_any = ["list_scenarios", "scenario_file", "man"])]
    scenario: Option<String>,
    /// Run your own scenario file instead of a bundled one (same TOML schema as simulator/scenarios/).
    #[arg(long, value_name = "PATH", conflicts_with = "scenario")]
    scenario_file: Option<std::path::PathBuf>,
    /// Device personality: masimo, nonin, hl7, s5 or intellivue (answers association and polls on pty; on
    /// stdout/file it writes what a monitor sends in a polled session, a capture).
    #[arg(long, default_value = "masimo")]
    device: Device,
    /// stdout, pty, serial:PATH, mllp:HOST:PORT, tcp-listen:[HOST:]PORT (bed K on PORT+K-1), udp:PORT (an
    /// IntelliVue's LAN interface on 127.0.0.1, bed K on PORT+K-1) or file:PATH.
    #[arg(long, default_value = "stdout")]
    output: OutputSpec,
    /// Number of beds (default: the scenario's own count; patients repeat with their own random streams).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1000))]
    beds: Option<u16>,
    /// Run only bed K (1-based) of a multi-bed scenario, e.g. to send one chair to stdout.
    #[arg(long, value_name = "K", value_parser = clap::value_parser!(u16).range(1..=1000))]
    bed: Option<u16>,
    /// Virtual seconds per real second (e.g. 60), or max (as fast as the reader takes them).
    #[arg(long, default_value = "1")]
    speed: Speed,
    /// Random seed (default: random, printed so the run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// Device clock at the start, RFC 3339 or `now`. Default: now, except with --seed and --speed max, where it is
    /// 2026-01-01T08:00:00Z so the output is identical byte for byte from run to run.
    #[arg(long, value_name = "RFC3339")]
    start_time: Option<String>,
    /// Write the manual page (vigil-sim.1) and shell completions into DIR and exit (for the Debian package).
    #[arg(long, value_name = "DIR", hide = true)]
    man: Option<std::path::PathBuf>,
    /// HL7 MSH-3 EUI-64 for a single bed (default: derived from the bed and --seed, or from seed 0 without --seed).
    #[arg(long, value_name = "EUI64")]
    device_id: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Play an IHE PCD ACM Alert Manager: take ORU^R40 over MLLP, answer ACK^R40, optionally acknowledge each new
    /// alarm with ORA^R41 after SECS, and print every message as one JSON line on stdout.
    AlertManager {
        /// Address to listen on, e.g. 127.0.0.1:2576 (port 0: any free port, printed in the first line).
        #[arg(long, value_name = "HOST:PORT")]
        listen: String,
        /// Send ORA^R41 "Accepted" (by a simulated nurse) this many seconds after a new alarm's first message.
        #[arg(long, value_name = "SECS")]
        ack_after: Option<f64>,
        /// Refuse every alarm with AR and a reason (heartbeats are still accepted).
        #[arg(long)]
        reject: bool,
        /// Leave the first N alarm messages unanswered, like a hung manager.
        #[arg(long, value_name = "N", default_value_t = 0)]
        ignore_first: u32,
    },
}

const EXAMPLES: &str = "Examples:
  vigil-sim --list-scenarios
  vigil-sim --scenario desaturation --device masimo --output stdout --speed max --seed 7
  vigil-sim --scenario calm-session --device nonin --output pty
  vigil-sim --scenario desaturation --device intellivue --output pty
  vigil-sim --scenario ward-of-six --device hl7 --output mllp:127.0.0.1:2575
  vigil-sim --scenario desaturation --device s5 --output tcp-listen:4001
  vigil-sim alert-manager --listen 127.0.0.1:2576 --ack-after 10";

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("vigil-sim: {msg}");
    ExitCode::from(EXIT_USAGE)
}

/// The manual page from the clap definition, and completion scripts (bash, zsh, fish).
fn write_manuals(dir: &std::path::Path) -> std::io::Result<()> {
    use clap::CommandFactory;
    std::fs::create_dir_all(dir)?;
    clap_mangen::Man::new(Cli::command()).generate_to(dir)?;
    let completions = dir.join("completions");
    std::fs::create_dir_all(&completions)?;
    for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Zsh, clap_complete::Shell::Fish] {
        clap_complete::generate_to(shell, &mut Cli::command(), "vigil-sim", &completions)?;
    }
    Ok(())
}

fn alert_manager(listen: &str, ack_after: Option<f64>, reject: bool, ignore_first: u32) -> ExitCode {
    let ack_after = match ack_after.map(std::time::Duration::try_from_secs_f64) {
        None => None,
        Some(Ok(d)) => Some(d),
        Some(Err(_)) => return usage("--ack-after: expected a number of seconds, 0 or more"),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigil-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let options = AlertManagerOptions { ack_after, reject, ignore_first };
    let result = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(listen).await?;
        let address = listener.local_addr()?;
        println!("{}", serde_json::json!({"type": "listening", "address": address.to_string()}));
        eprintln!("vigil-sim: alert manager listening on {address} (MLLP, ORU^R40 in, ACK^R40 and ORA^R41 out)");
        vigil_sim::alert_manager::run(listener, options, Arc::new(|line| println!("{line}"))).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-sim: alert-manager --listen {listen}: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(dir) = &cli.man {
        return match write_manuals(dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("vigil-sim: --man {}: {e}", dir.display());
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Command::AlertManager { listen, ack_after, reject, ignore_first }) = cli.command {
        return alert_manager(&listen, ack_after, reject, ignore_first);
    }
    if cli.list_scenarios {
        return match vigil_sim::scenario_descriptions() {
            Ok(list) => {
                let width = list.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
                for (name, description) in list {
                    println!("{name:width$}  {description}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("vigil-sim: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let (name, loaded) = match (&cli.scenario, &cli.scenario_file) {
        (Some(name), _) => (name.clone(), scenario::load(name)),
        (None, Some(path)) => {
            let name = path.display().to_string();
            match std::fs::read_to_string(path) {
                Ok(text) => (name.clone(), scenario::parse(&name, &text)),
                Err(e) => return usage(format_args!("--scenario-file {name}: {e}")),
            }
        }
        (None, None) => return usage("--scenario NAME or --scenario-file PATH is required"),
    };
    let scenario = match loaded {
        Ok(s) => s,
        Err(e) => return usage(e),
    };
    if let Err(e) = output::check_device(&cli.output, cli.device) {
        return usage(e);
    }
    // Offline runs (--seed with --speed max) are reproducible byte for byte; live runs show a plausible clock.
    let start = match cli.start_time.as_deref() {
        Some("now") => Utc::now().trunc_subsecs(0),
        Some(text) => match DateTime::parse_from_rfc3339(text) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => return usage(format_args!("--start-time: {e} (expected e.g. 2026-01-01T09:00:00Z, or now)")),
        },
        None if cli.seed.is_some() && cli.speed == Speed::Max => vigil_sim::fixed_epoch(),
        None => Utc::now().trunc_subsecs(0),
    };
    let seed = cli.seed.unwrap_or_else(rand::random);
    let total = cli.beds.map_or(scenario.default_beds(), usize::from);
    let beds: Vec<usize> = match cli.bed {
        Some(k) if usize::from(k) > total => {
            return usage(format_args!("--bed {k}: scenario '{name}' runs {total} bed(s) (use --beds to add more)"))
        }
        Some(k) => vec![usize::from(k) - 1],
        None => (0..total).collect(),
    };
    if beds.len() > 1 && cli.output.single_bed() {
        return usage(format_args!(
            "scenario '{name}' runs {} beds but this output carries one device: add --bed K (1–{}), or use --output pty \
             or --output mllp:HOST:PORT",
            beds.len(),
            beds.len()
        ));
    }
    if cli.device_id.is_some() && beds.len() > 1 {
        return usage("--device-id names one device: use it with a single bed (--bed K)");
    }
    let mut sims = Vec::new();
    for patient in &beds {
        let opts = FeedOptions {
            scenario: name.clone(),
            device: cli.device,
            seed,
            speed: cli.speed,
            patient: *patient,
            // Without --seed the physiology is random but the MSH-3 ids stay those of seed 0, so a daemon's
            // `kind = "mllp"` sources keep matching from one run to the next.
            device_id: cli
                .device_id
                .clone()
                .or_else(|| cli.seed.is_none().then(|| vigil_sim::derived_device_id(0, *patient))),
        };
        match Simulation::from_scenario(&scenario, &opts, start) {
            Ok(s) => sims.push((*patient, s)),
            Err(e) => return usage(e),
        }
    }
    eprintln!(
        "vigil-sim: scenario '{name}', device {}, {} bed(s), seed {seed}, speed {}, device clock from {}",
        cli.device,
        sims.len(),
        cli.speed,
        start.to_rfc3339()
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("vigil-sim: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.output, cli.device, cli.speed, sims));
    // A serial port's reader may still wait for the host in a blocking thread: do not wait for it at exit.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vigil-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(
    spec: OutputSpec,
    device: Device,
    speed: Speed,
    sims: Vec<(usize, Simulation)>,
) -> Result<(), output::OutputError> {
    let mut tasks = tokio::task::JoinSet::new();
    match spec {
        OutputSpec::Stdout => {
            for (_, sim) in sims {
                output::run_writer(sim, speed, tokio::io::stdout()).await?;
            }
        }
        OutputSpec::File(path) => {
            for (_, sim) in sims {
                let file = tokio::fs::File::create(&path).await.map_err(|source| output::OutputError::Io {
                    what: format!("creating {}", path.display()),
                    source,
                })?;
                output::run_writer(sim, speed, file).await?;
            }
        }
        OutputSpec::Serial(path) => {
            for (_, sim) in sims {
                let (reader, writer) = output::open_serial(&path).await?;
                output::run_duplex(sim, speed, reader, writer).await?;
            }
        }
        OutputSpec::Pty => {
            let mut ptys = Vec::new();
            for (patient, sim) in sims {
                let pty = Pty::open()?;
                // The paths go to stdout, one per line, so scripts can read them; labels go to stderr.
                println!("{}", pty.path.display());
                eprintln!("vigil-sim: bed {} ({device}) on {}", patient + 1, pty.path.display());
                ptys.push((pty, sim));
            }
            use std::io::Write;
            let _ = std::io::stdout().flush();
            for (pty, sim) in ptys {
                tasks.spawn(pty.run(sim, speed));
            }
        }
        OutputSpec::Udp(port) => {
            for (i, (patient, sim)) in sims.into_iter().enumerate() {
                let Some(port) = u16::try_from(i).ok().and_then(|i| port.checked_add(i)) else {
                    return Err(output::OutputError::BadSpec(format!("udp: no port for bed {}", patient + 1)));
                };
                eprintln!("vigil-sim: bed {} ({device}) LAN interface on udp 127.0.0.1:{port}", patient + 1);
                tasks.spawn(output::run_udp(sim, speed, port));
            }
        }
        OutputSpec::TcpListen { host, port } => {
            for (i, (patient, sim)) in sims.into_iter().enumerate() {
                let Some(port) = u16::try_from(i).ok().and_then(|i| port.checked_add(i)) else {
                    return Err(output::OutputError::BadSpec(format!("tcp-listen: no port for bed {}", patient + 1)));
                };
                let label = format!("bed {} ({device})", patient + 1);
                tasks.spawn(output::run_tcp_listen(sim, speed, format!("{host}:{port}"), label));
            }
        }
        OutputSpec::Mllp(addr) => {
            for (patient, sim) in sims {
                let label = format!("bed {} [{}]", patient + 1, sim.device_id());
                eprintln!("vigil-sim: {label} sends to {addr} with MSH-3 device id {}", sim.device_id());
                tasks.spawn(output::run_mllp(sim, speed, addr.clone(), label));
            }
        }
    }
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(result) => result?,
            Err(e) => eprintln!("vigil-sim: a bed task failed: {e}"),
        }
    }
    Ok(())
}
