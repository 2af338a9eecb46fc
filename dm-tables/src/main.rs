//! `dm-tables`: explain, render and diff multipath tables; drive device-mapper maps through the
//! kernel or the simulated backend. See dm-tables/README.md.

use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use dm_tables::{
    DevNo, DmBackend, KernelBackend, MapInfo, Message, MultipathStatus, MultipathTable, RemoveMode,
    Removed, SimBackend, devices_from_sysfs, plan, split_name_prefix,
};
use serde::Serialize;
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "dm-tables",
    version,
    about = "The device-mapper multipath target as typed Rust"
)]
struct Cli {
    /// `kernel` (ioctls on /dev/mapper/control) or `sim:STATE_FILE` (simulated, shared file).
    #[arg(long, global = true, default_value = "kernel")]
    backend: String,
    /// sysfs root whose block devices the simulated kernel knows (class/block/*/dev, dev/block/*).
    #[arg(long, global = true)]
    sysfs_root: Option<PathBuf>,
    /// Machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Explain `dmsetup table` / `dmsetup status` lines read from stdin.
    Explain {
        /// Treat every line as a status line (default: detected per line).
        #[arg(long)]
        status: bool,
    },
    /// Read the JSON model (as `explain --json` prints it) on stdin and print kernel lines.
    Render,
    /// The reload plan from table line OLD to table line NEW.
    Diff {
        old: String,
        new: String,
        /// The current status line, to know which paths are active now.
        #[arg(long)]
        status: Option<String>,
    },
    /// List device-mapper maps.
    Ls,
    /// Create a map from a table line.
    Create {
        name: String,
        #[arg(long, default_value = "")]
        uuid: String,
        #[arg(long)]
        table: String,
    },
    /// Load a new table into a map and resume it.
    Reload {
        name: String,
        #[arg(long)]
        table: String,
        /// Reload even if the new table drops every path that is active now.
        #[arg(long)]
        force: bool,
    },
    /// Print a map's table line (--json: the typed model).
    Table { name: String },
    /// Print a map's status line (--json: the typed model).
    Status { name: String },
    /// Send a target message, e.g. `fail_path 8:16`.
    Message {
        name: String,
        #[arg(required = true, num_args = 1..)]
        msg: Vec<String>,
    },
    /// Rename a map.
    Rename { old: String, new: String },
    /// Remove a map (refused while open unless --deferred).
    Remove {
        name: String,
        #[arg(long)]
        deferred: bool,
    },
    /// Wait for a device-mapper event on a map.
    Wait {
        name: String,
        /// Last event number seen (default: the current one, i.e. wait for the next event).
        #[arg(long)]
        event: Option<u32>,
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
    },
    /// Wait for the next device-mapper event on any map (arm-poll): prints the maps whose
    /// event number changed, came or went; fails after --timeout seconds without one.
    Events {
        #[arg(long, default_value_t = 30.0)]
        timeout: f64,
        /// Return at the first wake of the poll, even when no map's event number changed
        /// (a table swap, a create: the kernel's global event).
        #[arg(long)]
        any: bool,
    },
    /// Every map's event number from one listing.
    EventNumbers,
    /// Simulated-kernel helpers (only with --backend sim:FILE).
    #[command(subcommand)]
    Sim(SimCmd),
}

#[derive(Subcommand)]
enum SimCmd {
    /// Someone opens the map (open count + 1).
    Open { name: String },
    /// A holder closes the map (a deferred remove happens at the last close).
    Close { name: String },
    /// An I/O error on a path device: fails it in every map using it.
    IoError { devno: DevNo },
    /// Replace the set of existing block devices.
    Devices { devnos: Vec<DevNo> },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dm-tables: error: {}", sentence(&e));
            ExitCode::FAILURE
        }
    }
}

enum Backend {
    Kernel(KernelBackend),
    Sim(SimBackend),
}

impl Backend {
    fn dm(&self) -> &dyn DmBackend {
        match self {
            Backend::Kernel(k) => k,
            Backend::Sim(s) => s,
        }
    }
}

fn open_backend(cli: &Cli) -> Result<Backend> {
    if cli.backend == "kernel" {
        return Ok(Backend::Kernel(KernelBackend::new()?));
    }
    if let Some(file) = cli.backend.strip_prefix("sim:") {
        if file.is_empty() {
            bail!("--backend sim:STATE_FILE needs a file name");
        }
        let devices = match &cli.sysfs_root {
            Some(root) => Some(devices_from_sysfs(root)?),
            None => None,
        };
        return Ok(Backend::Sim(SimBackend::open_file(file, devices)?));
    }
    bail!(
        "unknown backend '{}': use 'kernel' or 'sim:STATE_FILE'",
        cli.backend
    )
}

fn print_json<T: Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: Cli) -> Result<()> {
    match &cli.cmd {
        Cmd::Explain { status } => return explain(*status, cli.json),
        Cmd::Render => return render(),
        Cmd::Diff { old, new, status } => return diff(old, new, status.as_deref(), cli.json),
        _ => {}
    }
    let backend = open_backend(&cli)?;
    let dm = backend.dm();
    let json = cli.json;
    match cli.cmd {
        Cmd::Explain { .. } | Cmd::Render | Cmd::Diff { .. } => Ok(()),
        Cmd::Ls => {
            let maps = dm.list()?;
            if json {
                return print_json(&maps);
            }
            print_maps(&maps);
            Ok(())
        }
        Cmd::Create { name, uuid, table } => {
            let t: MultipathTable = table
                .parse()
                .with_context(|| format!("table for map '{name}'"))?;
            let info = dm.create(&name, &uuid, &t)?;
            if json {
                return print_json(&info);
            }
            println!("created {} ({})", info.name, info.devno);
            Ok(())
        }
        Cmd::Reload { name, table, force } => {
            let desired: MultipathTable = table
                .parse()
                .with_context(|| format!("table for map '{name}'"))?;
            let current = dm.table(&name)?;
            let status = dm.status(&name).ok();
            let p = match plan(&name, &current, status.as_ref(), &desired) {
                Ok(p) => Some(p),
                Err(e) if force => {
                    eprintln!("dm-tables: warning: {e} (--force given, reloading anyway)");
                    None
                }
                Err(e) => return Err(e.into()),
            };
            dm.reload(&name, &desired)?;
            if json {
                return print_json(&p);
            }
            println!("reloaded {name}");
            Ok(())
        }
        Cmd::Table { name } => {
            if json {
                return print_json(&dm.table(&name)?);
            }
            println!("{}", dm.table_line(&name)?);
            Ok(())
        }
        Cmd::Status { name } => {
            if json {
                return print_json(&dm.status(&name)?);
            }
            println!("{}", dm.status_line(&name)?);
            Ok(())
        }
        Cmd::Message { name, msg } => {
            let m: Message = msg.join(" ").parse()?;
            dm.message(&name, &m)?;
            if json {
                return print_json(&serde_json::json!({ "map": name, "message": m.to_string() }));
            }
            Ok(())
        }
        Cmd::Rename { old, new } => {
            dm.rename(&old, &new)?;
            if json {
                return print_json(&serde_json::json!({ "old": old, "new": new }));
            }
            println!("renamed {old} to {new}");
            Ok(())
        }
        Cmd::Remove { name, deferred } => {
            let mode = if deferred {
                RemoveMode::Deferred
            } else {
                RemoveMode::Now
            };
            let r = dm.remove(&name, mode)?;
            if json {
                return print_json(&serde_json::json!({ "map": name, "result": r }));
            }
            match r {
                Removed::Removed => println!("removed {name}"),
                Removed::Deferred => {
                    println!("{name} is open; it will be removed when its last holder closes it")
                }
            }
            Ok(())
        }
        Cmd::Wait {
            name,
            event,
            timeout,
        } => {
            if !(timeout.is_finite() && timeout >= 0.0) {
                bail!("--timeout must be a non-negative number of seconds");
            }
            let last = match event {
                Some(e) => e,
                None => dm.info(&name)?.event_nr,
            };
            match dm.wait_event(&name, last, Duration::from_secs_f64(timeout))? {
                Some(nr) => {
                    if json {
                        return print_json(&serde_json::json!({ "map": name, "event_nr": nr }));
                    }
                    println!("{nr}");
                    Ok(())
                }
                None => bail!(
                    "timed out after {timeout} s waiting for an event on map '{name}' (event number still {last})"
                ),
            }
        }
        Cmd::Events { timeout, any } => {
            if !(timeout.is_finite() && timeout >= 0.0) {
                bail!("--timeout must be a non-negative number of seconds");
            }
            let timeout_d = Duration::from_secs_f64(timeout);
            let got = if any {
                let mut source = dm.event_source()?;
                source.arm()?;
                let before = source.event_numbers()?;
                // the baseline is taken: tell a script it may cause the event now
                eprintln!("waiting for a device-mapper event");
                if source.wait(timeout_d)? {
                    Some(dm_tables::EventChanges::between(
                        &before,
                        source.event_numbers()?,
                    ))
                } else {
                    None
                }
            } else {
                let mut w = dm_tables::EventWatcher::new(dm.event_source()?)?;
                eprintln!("waiting for a device-mapper event");
                w.next(timeout_d)?
            };
            match got {
                Some(c) => {
                    if json {
                        return print_json(&serde_json::json!({
                            "changed": c.changed.iter().map(|(n, e)| serde_json::json!({"map": n, "event_nr": e})).collect::<Vec<_>>(),
                            "added": c.added.iter().map(|(n, e)| serde_json::json!({"map": n, "event_nr": e})).collect::<Vec<_>>(),
                            "removed": c.removed,
                        }));
                    }
                    for (n, e) in &c.changed {
                        println!("changed {n} {e}");
                    }
                    for (n, e) in &c.added {
                        println!("added {n} {e}");
                    }
                    for n in &c.removed {
                        println!("removed {n}");
                    }
                    if c.is_empty() {
                        println!("woken, no map's event number changed");
                    }
                    Ok(())
                }
                None => bail!("timed out after {timeout} s without a device-mapper event"),
            }
        }
        Cmd::EventNumbers => {
            let nrs = dm.event_numbers()?;
            if json {
                return print_json(&nrs);
            }
            for (n, e) in &nrs {
                println!("{n} {e}");
            }
            Ok(())
        }
        Cmd::Sim(sc) => {
            let Backend::Sim(sim) = &backend else {
                bail!("the sim subcommands need --backend sim:STATE_FILE");
            };
            match sc {
                SimCmd::Open { name } => println!("{}", sim.open(&name)?),
                SimCmd::Close { name } => println!("{}", sim.close(&name)?),
                SimCmd::IoError { devno } => {
                    for m in sim.inject_io_error(devno)? {
                        println!("{m}");
                    }
                }
                SimCmd::Devices { devnos } => sim.set_devices(devnos)?,
            }
            Ok(())
        }
    }
}

fn print_maps(maps: &[MapInfo]) {
    let w = maps.iter().map(|m| m.name.len()).max().unwrap_or(4).max(4);
    println!(
        "{:<w$}  {:<9}  {:>4}  {:>5}  UUID",
        "NAME", "DEVNO", "OPEN", "EVENT"
    );
    for m in maps {
        println!(
            "{:<w$}  {:<9}  {:>4}  {:>5}  {}{}",
            m.name,
            m.devno.to_string(),
            m.open_count,
            m.event_nr,
            m.uuid.as_deref().unwrap_or("-"),
            if m.suspended { "  (suspended)" } else { "" }
        );
    }
}

#[derive(Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Explained {
    Table {
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        table: MultipathTable,
    },
    Status {
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        status: MultipathStatus,
    },
}

fn explain_line(line: &str, force_status: bool) -> Result<Explained> {
    let (name, _) = split_name_prefix(line);
    let name = name.map(str::to_string);
    if force_status {
        return Ok(Explained::Status {
            name,
            status: line.parse()?,
        });
    }
    // A status line has group/path state letters where a table has selector names, so a line
    // that parses as a status is one.
    if let Ok(status) = line.parse::<MultipathStatus>() {
        return Ok(Explained::Status { name, status });
    }
    match line.parse::<MultipathTable>() {
        Ok(table) => Ok(Explained::Table { name, table }),
        Err(e) => Err(e.into()),
    }
}

fn explain(force_status: bool, json: bool) -> Result<()> {
    let mut out = Vec::new();
    let mut failed = 0;
    for (i, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line.context("reading stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        match explain_line(&line, force_status) {
            Ok(e) => out.push(e),
            Err(e) => {
                failed += 1;
                eprintln!("dm-tables: line {}: {}", i + 1, sentence(&e));
            }
        }
    }
    if json {
        print_json(&out)?;
    } else {
        for e in &out {
            print!("{}", tree(e));
        }
    }
    if failed > 0 {
        bail!("{failed} line(s) could not be parsed");
    }
    Ok(())
}

fn size(sectors: u64) -> String {
    let b = sectors as f64 * 512.0;
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = b;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < units.len() {
        v /= 1024.0;
        u += 1;
    }
    format!("{v:.1} {}", units[u])
}

fn tree(e: &Explained) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    match e {
        Explained::Table { name, table: t } => {
            let _ = writeln!(
                s,
                "{}table: sectors {}+{} ({})",
                name.as_deref()
                    .map(|n| format!("{n}: "))
                    .unwrap_or_default(),
                t.start,
                t.length,
                size(t.length)
            );
            let feats: Vec<String> = t.features.iter().map(ToString::to_string).collect();
            let _ = writeln!(
                s,
                "├─ features: {}",
                if feats.is_empty() {
                    "none".into()
                } else {
                    feats.join(", ")
                }
            );
            let _ = writeln!(
                s,
                "├─ hardware handler: {}",
                t.hw_handler
                    .as_ref()
                    .map_or("none".to_string(), |h| format!(
                        "{} {}",
                        h.name,
                        h.args.join(" ")
                    )
                    .trim()
                    .to_string())
            );
            let _ = writeln!(
                s,
                "{} initial group: {}",
                branch(t.groups.is_empty()),
                t.initial_group
            );
            for (gi, g) in t.groups.iter().enumerate() {
                let last_g = gi + 1 == t.groups.len();
                let _ = writeln!(
                    s,
                    "{} group {}: selector {}{}",
                    branch(last_g),
                    gi + 1,
                    g.selector,
                    g.selector_args
                        .iter()
                        .map(|a| format!(" {a}"))
                        .collect::<String>()
                );
                for (pi, p) in g.paths.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        "{}  {} {}  args: {}",
                        stem(last_g),
                        branch(pi + 1 == g.paths.len()),
                        p.devno,
                        if p.args.is_empty() {
                            "-".into()
                        } else {
                            p.args.join(" ")
                        }
                    );
                }
            }
        }
        Explained::Status { name, status: st } => {
            let _ = writeln!(
                s,
                "{}status: sectors {}+{} ({})",
                name.as_deref()
                    .map(|n| format!("{n}: "))
                    .unwrap_or_default(),
                st.start,
                st.length,
                size(st.length)
            );
            let _ = writeln!(
                s,
                "├─ queueing I/O: {}, pg_init count: {}{}",
                if st.queue_io { "yes" } else { "no" },
                st.pg_init_count,
                if st.extra_features.is_empty() {
                    String::new()
                } else {
                    format!(", other: {}", st.extra_features.join(" "))
                }
            );
            if !st.hw_handler_status.is_empty() {
                let _ = writeln!(
                    s,
                    "├─ hardware handler status: {}",
                    st.hw_handler_status.join(" ")
                );
            }
            let _ = writeln!(
                s,
                "{} current group: {}",
                branch(st.groups.is_empty()),
                st.current_group
            );
            for (gi, g) in st.groups.iter().enumerate() {
                let last_g = gi + 1 == st.groups.len();
                let state = match g.state {
                    dm_tables::GroupState::Active => "active",
                    dm_tables::GroupState::Enabled => "enabled",
                    dm_tables::GroupState::Disabled => "disabled",
                };
                let _ = writeln!(
                    s,
                    "{} group {}: {state}{}",
                    branch(last_g),
                    gi + 1,
                    if g.selector_status.is_empty() {
                        String::new()
                    } else {
                        format!(" (selector: {})", g.selector_status.join(" "))
                    }
                );
                for (pi, p) in g.paths.iter().enumerate() {
                    let _ = writeln!(
                        s,
                        "{}  {} {}  {}  failures: {}  selector info: {}",
                        stem(last_g),
                        branch(pi + 1 == g.paths.len()),
                        p.devno,
                        match p.state {
                            dm_tables::PathState::Active => "active",
                            dm_tables::PathState::Failed => "FAILED",
                        },
                        p.fail_count,
                        if p.selector_info.is_empty() {
                            "-".into()
                        } else {
                            p.selector_info.join(" ")
                        }
                    );
                }
            }
        }
    }
    s
}

fn render_value(v: &Value) -> Result<String> {
    let name = v.get("name").and_then(Value::as_str);
    let prefix = name.map(|n| format!("{n}: ")).unwrap_or_default();
    if let Some(t) = v.get("table") {
        let t: MultipathTable = serde_json::from_value(t.clone()).context("invalid table model")?;
        t.validate(name.unwrap_or("(json)"))?;
        return Ok(format!("{prefix}{t}"));
    }
    if let Some(s) = v.get("status") {
        let s: MultipathStatus =
            serde_json::from_value(s.clone()).context("invalid status model")?;
        return Ok(format!("{prefix}{s}"));
    }
    if let Ok(t) = serde_json::from_value::<MultipathTable>(v.clone()) {
        t.validate("(json)")?;
        return Ok(t.to_string());
    }
    match serde_json::from_value::<MultipathStatus>(v.clone()) {
        Ok(s) => Ok(s.to_string()),
        Err(e) => {
            Err(anyhow::Error::new(e).context("the JSON is neither a table nor a status model"))
        }
    }
}

fn render() -> Result<()> {
    let mut text = String::new();
    std::io::stdin()
        .read_to_string(&mut text)
        .context("reading stdin")?;
    let v: Value = serde_json::from_str(&text).context("stdin is not JSON")?;
    let items = match &v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    for item in &items {
        println!("{}", render_value(item)?);
    }
    Ok(())
}

fn diff(old: &str, new: &str, status: Option<&str>, json: bool) -> Result<()> {
    let o: MultipathTable = old.parse().context("OLD table")?;
    let n: MultipathTable = new.parse().context("NEW table")?;
    let s: Option<MultipathStatus> = status
        .map(str::parse)
        .transpose()
        .context("--status line")?;
    let name = split_name_prefix(old).0.unwrap_or("map");
    let p = plan(name, &o, s.as_ref(), &n)?;
    if json {
        return print_json(&p);
    }
    if p.changes.is_empty() {
        println!("no changes");
    }
    for c in &p.changes {
        println!("{c}");
    }
    for m in &p.messages {
        println!("message: {m}");
    }
    println!(
        "reload needed: {}",
        if p.needs_reload { "yes" } else { "no" }
    );
    Ok(())
}

/// The tree glyph of an item in `explain`'s output: the last one closes the branch.
fn branch(last: bool) -> &'static str {
    if last { "└─" } else { "├─" }
}

/// What runs down the left of a group's children: nothing below the last group.
fn stem(last_group: bool) -> &'static str {
    if last_group { " " } else { "│" }
}

/// An error and its causes as one sentence for the terminal. Our library errors quote their
/// cause in their own text (`cannot read X: Is a directory`) and also name it as their
/// `source`, so printing the whole chain (`{:#}`) would say it twice; a cause whose text is
/// already there is left out.
fn sentence(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if out.contains(&text) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
    }
    out
}
