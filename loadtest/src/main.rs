//! `lwm2m-loadtest`: fleet simulator for the gateway. The full harness is tracked by its own issue;
//! until then this binary only says so, so that nobody mistakes it for a measurement.
fn main() {
    eprintln!("lwm2m-loadtest: not built yet; use `cargo run --release --example regstorm` for registration throughput");
    std::process::exit(2);
}
