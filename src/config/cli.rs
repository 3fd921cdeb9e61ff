//! The command line: [`Args`] = `--config FILE` + every [`Options`] flag. The clap command is
//! built by hand around the derived arguments so that each option's help gets, appended from the
//! same places the behaviour comes from, its file key (the arg id) and its default
//! (`Config::default()` seen through [`Options::from_config`]). No default is written in a help
//! string, so help and behaviour cannot drift.

use std::path::PathBuf;

use clap::{Arg, Command, CommandFactory, Parser};
use serde_json::Value;

use super::options::Options;
use super::Config;

/// Command-line flags. Every flag overrides the same key of the config file.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct Args {
    /// TOML configuration file; flags override its keys
    #[arg(long, short = 'c', value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(flatten)]
    pub options: Options,
}

impl CommandFactory for Args {
    fn command() -> Command {
        finish(<Args as clap::Args>::augment_args(Command::new(NAME)))
    }

    fn command_for_update() -> Command {
        finish(<Args as clap::Args>::augment_args_for_update(Command::new(
            NAME,
        )))
    }
}

const NAME: &str = "lwm2m-gateway";

/// Name, version and texts (set last: the derived parts bring doc comments as `about`), and the
/// key and default of every option.
fn finish(cmd: Command) -> Command {
    with_keys_and_defaults(cmd)
        .version(env!("CARGO_PKG_VERSION"))
        .about("LwM2M (CoAP/UDP) to MQTT gateway, EMQX-compatible MQTT API")
        .long_about(None)
        .after_help(
            "Every option is also a key of the TOML file, shown as [key: ...]; \
             flags override the file, the file overrides the defaults.",
        )
}

impl Parser for Args {}

/// The default options as a JSON tree whose paths are the file keys (nulls: no default).
pub(super) fn defaults_tree() -> Value {
    serde_json::to_value(Options::from_config(&Config::default())).unwrap_or(Value::Null)
}

/// The value at a dotted key path, if the path exists.
pub(super) fn at_key<'a>(tree: &'a Value, key: &str) -> Option<&'a Value> {
    key.split('.').try_fold(tree, |v, k| v.get(k))
}

/// A default as a user writes it: strings unquoted, lists comma-separated, null as `none`.
pub(super) fn render(v: &Value) -> String {
    match v {
        Value::Null => "none".to_string(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(render).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn with_keys_and_defaults(cmd: Command) -> Command {
    let tree = defaults_tree();
    cmd.mut_args(|a: Arg| {
        let id = a.get_id().as_str();
        let Some(default) = at_key(&tree, id) else {
            return a; // --config
        };
        let suffix = format!("[key: {id}] [default: {}]", render(default));
        let help = match a.get_help() {
            Some(h) => format!("{h} {suffix}"),
            None => suffix,
        };
        a.help(help)
    })
}

/// The flag of the option whose file key is `key`, for error messages.
pub(super) fn flag_of(key: &str) -> Option<String> {
    let cmd = <Args as clap::Args>::augment_args(Command::new(NAME));
    let flag = cmd
        .get_arguments()
        .find(|a| a.get_id().as_str() == key)
        .and_then(|a| a.get_long())
        .map(|l| format!("--{l}"));
    flag
}
