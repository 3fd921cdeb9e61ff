//! The gateway as its own process (the binary cargo built for these tests), for what only a
//! process can show: SIGTERM, `kill -9`, a restart on the same address and state directory.

use std::net::{SocketAddr, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::{rand_u16, repo_path};

pub struct GatewayProcess {
    child: Option<Child>,
    pub udp: SocketAddr,
}

/// A loopback address with a UDP port free right now (the gateway binds it soon after).
pub fn free_udp_addr() -> SocketAddr {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.local_addr().unwrap()
}

impl GatewayProcess {
    /// Starts `lwm2m-gateway` listening on `udp`, on the broker at `broker`, with its state in
    /// `dir` and the `extra` flags; its log goes to `dir/../<dir name>.log` (appended).
    pub fn start(udp: SocketAddr, broker: SocketAddr, dir: &Path, extra: &[&str]) -> Self {
        let log_path = dir.with_extension("log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_lwm2m-gateway"))
            .arg("--listen")
            .arg(udp.to_string())
            .arg("--mqtt-url")
            .arg(format!("mqtt://{broker}"))
            .arg("--mqtt-client-id")
            .arg(format!("gw-proc-{}-{}", std::process::id(), rand_u16()))
            .arg("--state-dir")
            .arg(dir)
            // Its own DTLS port too: the default one is shared by every gateway on the machine.
            .arg("--dtls-listen")
            .arg(free_udp_addr().to_string())
            .arg("--xml-dir")
            .arg(repo_path("xml"))
            // The default 8080 is one for the whole machine.
            .arg("--http-listen")
            .arg("127.0.0.1:0")
            .args(extra)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("the gateway binary starts");
        GatewayProcess {
            child: Some(child),
            udp,
        }
    }

    /// SIGTERM, then the exit status (within `limit`).
    pub fn terminate(mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        // SAFETY: kill(2) on our own child's pid, which has not been waited for yet.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("the gateway did not exit within {limit:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL: no chance to write anything.
    pub fn kill(mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
