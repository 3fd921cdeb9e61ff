//! `[translators.<name>]`: the six EMQX translators share one shape (`topic`, `qos`), so their
//! options are one struct used six times. In the file they nest as EMQX writes them; their flags
//! are `--topic-<name>` and `--qos-<name>`, generated from [`TRANSLATORS`] because clap's derive
//! cannot prefix a struct flattened several times. Arg ids are the keys' dotted paths, as
//! everywhere in [`super::options`].

use clap::{Arg, ArgMatches, Command, FromArgMatches};
use serde::{Deserialize, Serialize};

use crate::core::topics::{Translator, Translators};

/// One translator: `None` = not given.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TranslatorOptions {
    pub topic: Option<String>,
    pub qos: Option<u8>,
}

/// `[translators]`.
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TranslatorsOptions {
    pub command: TranslatorOptions,
    pub response: TranslatorOptions,
    pub notify: TranslatorOptions,
    pub register: TranslatorOptions,
    pub update: TranslatorOptions,
    pub deregister: TranslatorOptions,
}

/// One translator's names, help and places in the partial and in the typed configuration.
pub struct TranslatorSpec {
    pub topic_id: &'static str,
    pub topic_flag: &'static str,
    pub qos_id: &'static str,
    pub qos_flag: &'static str,
    /// "Notification topic", "QoS of notifications": the noun of both help lines.
    pub what: &'static str,
    pub options: fn(&mut TranslatorsOptions) -> &mut TranslatorOptions,
    pub config: fn(&Translators) -> &Translator,
    pub config_mut: fn(&mut Translators) -> &mut Translator,
}

macro_rules! spec {
    ($name:ident, $what:literal) => {
        TranslatorSpec {
            topic_id: concat!("translators.", stringify!($name), ".topic"),
            topic_flag: concat!("topic-", stringify!($name)),
            qos_id: concat!("translators.", stringify!($name), ".qos"),
            qos_flag: concat!("qos-", stringify!($name)),
            what: $what,
            options: |t| &mut t.$name,
            config: |t| &t.$name,
            config_mut: |t| &mut t.$name,
        }
    };
}

/// The six translators, in the order the help lists them.
pub const TRANSLATORS: [TranslatorSpec; 6] = [
    spec!(command, "the command subscription (under the mountpoint)"),
    spec!(response, "responses"),
    spec!(notify, "notifications"),
    spec!(register, "register events"),
    spec!(update, "update events"),
    spec!(deregister, "deregister events"),
];

impl clap::Args for TranslatorsOptions {
    fn augment_args(mut cmd: Command) -> Command {
        cmd = cmd.next_help_heading("Topics (translators)");
        for t in &TRANSLATORS {
            cmd = cmd.arg(
                Arg::new(t.topic_id)
                    .long(t.topic_flag)
                    .value_name("TOPIC")
                    .help(format!("Topic of {}", t.what)),
            );
        }
        for t in &TRANSLATORS {
            cmd = cmd.arg(
                Arg::new(t.qos_id)
                    .long(t.qos_flag)
                    .value_name("QOS")
                    .value_parser(clap::value_parser!(u8))
                    .help(format!("QoS of {}: 0, 1 or 2", t.what)),
            );
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl FromArgMatches for TranslatorsOptions {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut o = TranslatorsOptions::default();
        o.update_from_arg_matches(m)?;
        Ok(o)
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        for t in &TRANSLATORS {
            let slot = (t.options)(self);
            if let Some(topic) = m.get_one::<String>(t.topic_id) {
                slot.topic = Some(topic.clone());
            }
            if let Some(qos) = m.get_one::<u8>(t.qos_id) {
                slot.qos = Some(*qos);
            }
        }
        Ok(())
    }
}
