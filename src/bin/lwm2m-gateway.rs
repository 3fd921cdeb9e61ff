//! `lwm2m-gateway`: loads the configuration (file + flags), starts logging and the gateway, and
//! runs until killed.

use clap::Parser;
use lwm2m_gateway::config::{Args, Config};
use lwm2m_gateway::runtime::Gateway;

fn main() {
    let args = Args::parse();
    let config = match Config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lwm2m-gateway: {e}");
            std::process::exit(2);
        }
    };
    let mut logger = env_logger::Builder::new();
    logger.parse_filters(&config.log_level);
    // The MQTT client library is chatty at info; its warnings still show.
    logger.filter_module("rumqttc", log::LevelFilter::Warn);
    // The embedded broker logs tracing spans at ERROR level for normal events; RUST_LOG=rumqttd=info
    // brings them back.
    logger.filter_module("rumqttd", log::LevelFilter::Off);
    logger.filter_module("tracing", log::LevelFilter::Off);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        logger.parse_filters(&spec);
    }
    logger.format_timestamp_millis().init();
    match Gateway::start(config) {
        Ok(gw) => gw.wait(),
        Err(e) => {
            eprintln!("lwm2m-gateway: {e:#}");
            std::process::exit(1);
        }
    }
}
