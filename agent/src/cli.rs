//! The `margay` command line: subcommands, options, exit codes.
//!
//! ```text
//! margay run     [OPTIONS]          the agent
//! margay check   [OPTIONS]          config, etcd, kernel and tools usable?
//! margay plan    [OPTIONS] [--json] what a sync would change now; writes nothing
//! margay status  [OPTIONS] [--bird-socket PATH]  every host's last heartbeat (+ BGP sessions)
//! margay version
//! ```
//!
//! The options are built from the settings table (`margay_config::setting`)
//! so every `--flag` has exactly the name of its TOML key and `MARGAY_*`
//! variable. Values are passed through as text; the config crate validates
//! them, so a bad flag gets the same message as a bad file entry.
//!
//! Exit codes: 0 success (and SIGTERM/SIGINT for `run`), 1 failure or a
//! problem found by `check`, 2 bad usage or settings.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Arg, ArgAction, ArgMatches, Command};
use margay_config::setting::SPECS;
use margay_config::{Resolved, Setting};

use crate::settings::SettingsLoader;
use crate::VERSION;

/// Exit code for bad usage or settings.
pub const EXIT_USAGE: u8 = 2;

/// The options every subcommand but `version` takes.
fn with_options(mut cmd: Command) -> Command {
    cmd = cmd.arg(
        Arg::new("config")
            .long("config")
            .value_name("FILE")
            .value_parser(clap::value_parser!(PathBuf))
            .help("TOML config file [default: /etc/margay/margay.toml when present]"),
    );
    for spec in SPECS.iter().filter(|s| s.cli) {
        // clap (without its `string` feature) takes `&'static str` names; the
        // grammar is built once per process, so leaking these few is fine.
        let long: &'static str = Box::leak(spec.key.replace('_', "-").into_boxed_str());
        cmd = cmd.arg(
            Arg::new(spec.key)
                .long(long)
                .value_name(value_name(spec.setting))
                .help(spec.help)
                .action(ArgAction::Set),
        );
    }
    cmd
}

fn value_name(setting: Setting) -> &'static str {
    match setting {
        Setting::Hostname => "NAME",
        Setting::EtcdEndpoints => "URL[,URL...]",
        Setting::EtcdCaFile | Setting::EtcdCertFile | Setting::EtcdKeyFile => "FILE",
        Setting::EtcdPrefix => "PREFIX",
        Setting::Dataplane => "nftables|iptables|none",
        Setting::RefreshInterval => "SECONDS",
        Setting::MetricsAddr => "HOST:PORT",
        Setting::LogFormat => "text|json",
        Setting::LogLevel => "LEVEL",
        Setting::InterHostRoutes => "direct|bgp|none",
        Setting::BirdConfig => "FILE",
        Setting::BirdSocket => "PATH",
        _ => "VALUE",
    }
}

/// The id (and snake_case key) of the `--bird-socket` option: given to
/// `status` on the command line, it adds the BGP sessions to the report.
const BIRD_SOCKET: &str = "bird_socket";

/// The whole command-line grammar.
pub fn command() -> Command {
    Command::new("margay")
        .about("Per-host routing and policy agent for Calico v1 data in etcd")
        .version(VERSION)
        .subcommand_required(true)
        .arg_required_else_help(true)
        .subcommand(with_options(Command::new("run").about("Run the agent")))
        .subcommand(with_options(Command::new("check").about(
            "Check config, etcd, kernel and tools; non-zero on a problem",
        )))
        .subcommand(with_options(
            Command::new("plan")
                .about("Show what a sync would change right now; writes nothing")
                .arg(
                    Arg::new("json")
                        .long("json")
                        .action(ArgAction::SetTrue)
                        .help("print the plan as JSON"),
                ),
        ))
        .subcommand(with_options(
            Command::new("status").about("Show every host's last status report"),
        ))
        .subcommand(Command::new("version").about("Print the version"))
}

/// The setting values given on the command line, by snake_case key.
pub fn option_map(matches: &ArgMatches) -> BTreeMap<String, String> {
    SPECS
        .iter()
        .filter(|s| s.cli)
        .filter_map(|s| {
            matches
                .get_one::<String>(s.key)
                .map(|v| (s.key.to_owned(), v.clone()))
        })
        .collect()
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let matches = command().get_matches();
    let Some((name, sub)) = matches.subcommand() else {
        return ExitCode::from(EXIT_USAGE);
    };
    if name == "version" {
        println!("margay {VERSION}");
        return ExitCode::SUCCESS;
    }
    let config_flag = sub.get_one::<PathBuf>("config").cloned();
    let loader = match SettingsLoader::from_process(option_map(sub), config_flag.as_deref()) {
        Ok(loader) => loader,
        Err(e) => return usage_error(&e),
    };
    let resolved = match loader.resolve() {
        Ok(r) => r,
        Err(e) => return usage_error(&e),
    };
    let json = name == "plan" && sub.get_flag("json");
    let bird_socket = match name {
        "status" => sub.get_one::<String>(BIRD_SOCKET).map(PathBuf::from),
        _ => None,
    };
    match runtime() {
        Ok(rt) => rt.block_on(dispatch(name, loader, resolved, json, bird_socket)),
        Err(e) => {
            eprintln!("margay: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage_error(e: &anyhow::Error) -> ExitCode {
    eprintln!("margay: {e:#}");
    ExitCode::from(EXIT_USAGE)
}

fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
}

async fn dispatch(
    name: &str,
    loader: SettingsLoader,
    resolved: Resolved,
    json: bool,
    bird_socket: Option<PathBuf>,
) -> ExitCode {
    let settings = resolved.settings.clone();
    let log = match crate::logging::init(settings.log_format, settings.log_level.as_str()) {
        Ok(handle) => handle,
        Err(e) => {
            eprintln!("margay: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    for warning in &resolved.warnings {
        tracing::warn!(%warning, "setting ignored or questionable");
    }
    let result = match name {
        "run" => crate::cmd::run::run_agent(loader, resolved, log).await,
        "check" => crate::cmd::check::run_check(&settings, loader)
            .await
            .map(|ok| ok.then_some(())),
        "plan" => crate::cmd::plan::run_plan(loader, &settings, json)
            .await
            .map(Some),
        "status" => crate::cmd::status::run_status(&settings, bird_socket.as_deref())
            .await
            .map(Some),
        _ => return ExitCode::from(EXIT_USAGE),
    };
    match result {
        Ok(Some(())) => ExitCode::SUCCESS,
        Ok(None) => ExitCode::FAILURE,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "margay {name} failed");
            eprintln!("margay: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grammar_is_consistent() {
        command().debug_assert();
    }

    #[test]
    fn run_takes_every_documented_option() {
        let m = command()
            .try_get_matches_from([
                "margay",
                "run",
                "--config",
                "/x.toml",
                "--hostname",
                "h1",
                "--etcd-endpoints",
                "http://a:1,http://b:2",
                "--etcd-ca-file",
                "/ca",
                "--etcd-cert-file",
                "/c",
                "--etcd-key-file",
                "/k",
                "--etcd-prefix",
                "/calico",
                "--dataplane",
                "none",
                "--refresh-interval",
                "5",
                "--metrics-addr",
                "127.0.0.1:0",
                "--log-format",
                "json",
                "--log-level",
                "debug",
            ])
            .expect("parses");
        let (name, sub) = m.subcommand().expect("subcommand");
        assert_eq!(name, "run");
        let map = option_map(sub);
        assert_eq!(map.len(), 11, "every option but --config");
        assert_eq!(map["etcd_endpoints"], "http://a:1,http://b:2");
        assert_eq!(map["dataplane"], "none");
        assert_eq!(
            sub.get_one::<PathBuf>("config"),
            Some(&PathBuf::from("/x.toml"))
        );
    }

    #[test]
    fn check_and_plan_take_the_same_options_and_plan_has_json() {
        for sub in ["check", "plan", "status"] {
            let m = command()
                .try_get_matches_from(["margay", sub, "--dataplane", "iptables", "--hostname", "h"])
                .expect("parses");
            assert_eq!(
                option_map(m.subcommand().expect("sub").1)["dataplane"],
                "iptables"
            );
        }
        let m = command()
            .try_get_matches_from(["margay", "plan", "--json"])
            .expect("parses");
        assert!(m.subcommand().expect("sub").1.get_flag("json"));
        assert!(command()
            .try_get_matches_from(["margay", "run", "--json"])
            .is_err());
        assert!(command()
            .try_get_matches_from(["margay", "run", "--bogus", "1"])
            .is_err());
    }
}
