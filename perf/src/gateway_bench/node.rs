//! The node under test: addresses of a running one, or a `nexus pipeline` child process started
//! for the run (temporary data folder, port 0 everywhere) and stopped with SIGTERM; funding
//! accounts through the JSON Lines (admin/dev) port.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Where the node's three ports are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeAddresses {
    /// Binary order entry (default 7071).
    pub order_entry: SocketAddr,
    /// Market data (default 7072).
    pub market_data: SocketAddr,
    /// JSON Lines port (default 7070), used to fund accounts; `None`: accounts are assumed
    /// funded.
    pub admin: Option<SocketAddr>,
}

/// The fields of the node's `ready` line that a run needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyLine {
    /// The three addresses.
    pub addresses: NodeAddresses,
    /// The whole line, as printed.
    pub raw: Value,
}

/// Parses the node's `{"event":"ready",...}` line.
pub fn parse_ready_line(line: &str) -> Result<ReadyLine, String> {
    let raw: Value =
        serde_json::from_str(line.trim()).map_err(|e| format!("not JSON ({e}): {line:?}"))?;
    if raw["event"] != "ready" {
        return Err(format!("expected the ready line, got {line:?}"));
    }
    let address = |field: &str| -> Result<SocketAddr, String> {
        raw[field]
            .as_str()
            .ok_or_else(|| format!("ready line has no {field}"))?
            .parse()
            .map_err(|e| format!("ready line {field}: {e}"))
    };
    Ok(ReadyLine {
        addresses: NodeAddresses {
            order_entry: address("order_entry")?,
            market_data: address("market_data")?,
            admin: Some(address("listen")?),
        },
        raw,
    })
}

/// A `nexus pipeline` process started for the run. Stopped (SIGTERM, then SIGKILL after 10 s)
/// by [`SpawnedNode::stop`] or on drop.
pub struct SpawnedNode {
    child: Option<Child>,
    /// What the node printed when ready.
    pub ready: ReadyLine,
    /// Further stdout lines (the `stopped` line).
    stdout_lines: mpsc::Receiver<String>,
    _data_dir: tempfile::TempDir,
}

/// The `nexus` binary next to the running executable (`target/release/nexus` beside
/// `target/release/nexus-perf`), or one directory up (test executables live in `deps/`).
pub fn find_nexus_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let name = format!("nexus{}", std::env::consts::EXE_SUFFIX);
    let mut dir = exe.parent();
    for _ in 0..2 {
        let d = dir?;
        let candidate = d.join(&name);
        if candidate.is_file() {
            return Some(candidate);
        }
        dir = d.parent();
    }
    None
}

impl SpawnedNode {
    /// Starts `nexus pipeline` with a fresh temporary data folder and port 0 on all three ports
    /// (`config`: an optional `--config` file; its ports and data folder are overridden).
    /// Waits up to 30 s for the ready line.
    pub fn start(nexus: &Path, config: Option<&Path>) -> Result<SpawnedNode, String> {
        let data_dir = tempfile::Builder::new()
            .prefix("nexus-perf-")
            .tempdir()
            .map_err(|e| format!("temporary data folder: {e}"))?;
        let mut command = Command::new(nexus);
        command.arg("pipeline");
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command
            .arg("--data-dir")
            .arg(data_dir.path().join("data"))
            .args([
                "--listen",
                "127.0.0.1:0",
                "--order-entry-listen",
                "127.0.0.1:0",
                "--market-data-listen",
                "127.0.0.1:0",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", nexus.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let stderr = child.stderr.take().expect("piped");
        std::thread::Builder::new()
            .name("nexus-stderr".into())
            .spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("[nexus] {line}");
                }
            })
            .expect("spawn thread");
        let (lines_tx, lines) = mpsc::channel();
        std::thread::Builder::new()
            .name("nexus-stdout".into())
            .spawn(move || {
                for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                    if lines_tx.send(line).is_err() {
                        break;
                    }
                }
            })
            .expect("spawn thread");
        let mut node = SpawnedNode {
            child: Some(child),
            ready: ReadyLine {
                addresses: NodeAddresses {
                    order_entry: ([127, 0, 0, 1], 0).into(),
                    market_data: ([127, 0, 0, 1], 0).into(),
                    admin: None,
                },
                raw: Value::Null,
            },
            stdout_lines: lines,
            _data_dir: data_dir,
        };
        match node.stdout_lines.recv_timeout(Duration::from_secs(30)) {
            Ok(line) => node.ready = parse_ready_line(&line)?,
            Err(_) => {
                let status = node
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                return Err(format!(
                    "{} printed no ready line within 30 s (exit status: {status:?})",
                    nexus.display()
                ));
            }
        }
        Ok(node)
    }

    /// Sends SIGTERM and waits for the exit (SIGKILL after 10 s); returns the node's
    /// `stopped` line if it printed one.
    pub fn stop(&mut self) -> Option<Value> {
        let mut child = self.child.take()?;
        let pid = child.id().to_string();
        let termed = Command::new("kill")
            .args(["-TERM", &pid])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !termed {
            let _ = child.kill();
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match child.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
            }
        }
        let mut stopped = None;
        while let Ok(line) = self.stdout_lines.recv_timeout(Duration::from_millis(500)) {
            if let Ok(value) = serde_json::from_str::<Value>(&line) {
                if value["event"] == "stopped" {
                    stopped = Some(value);
                }
            }
        }
        stopped
    }
}

impl Drop for SpawnedNode {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One deposit to make on the JSON port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Deposit {
    /// Account id.
    pub account: u64,
    /// Asset name (`BTC`, `USD` in the default genesis).
    pub asset: String,
    /// Decimal string in whole asset units.
    pub amount: String,
}

/// The JSON line of a deposit.
pub fn deposit_line(deposit: &Deposit) -> String {
    serde_json::json!({
        "op": "deposit",
        "account": deposit.account,
        "asset": deposit.asset,
        "amount": deposit.amount,
    })
    .to_string()
}

/// Sends every deposit on one connection to the JSON port and waits until each line is
/// `finalized` (durable); any `rejected` or `error` reply is an error naming the deposit.
pub fn fund(admin: SocketAddr, deposits: &[Deposit], timeout: Duration) -> Result<(), String> {
    if deposits.is_empty() {
        return Ok(());
    }
    let mut stream = TcpStream::connect(admin).map_err(|e| format!("admin port {admin}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let mut text = String::new();
    for deposit in deposits {
        text.push_str(&deposit_line(deposit));
        text.push('\n');
    }
    stream
        .write_all(text.as_bytes())
        .map_err(|e| format!("admin port {admin}: {e}"))?;
    let mut finalized = vec![false; deposits.len()];
    let mut left = deposits.len();
    let mut pending = Vec::new();
    let deadline = Instant::now() + timeout;
    let mut chunk = [0u8; 8192];
    while left > 0 {
        if Instant::now() > deadline {
            return Err(format!(
                "admin port {admin}: {left} of {} deposits not finalized within {timeout:?}",
                deposits.len()
            ));
        }
        let n = match stream.read(&mut chunk) {
            Ok(0) => return Err(format!("admin port {admin} closed the connection")),
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(format!("admin port {admin}: {e}")),
        };
        pending.extend_from_slice(&chunk[..n]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let reply: Value = serde_json::from_slice(&line)
                .map_err(|e| format!("admin port reply is not JSON ({e})"))?;
            let index = reply["line"]
                .as_u64()
                .and_then(|l| (l as usize).checked_sub(1))
                .filter(|&i| i < deposits.len());
            match reply["ev"].as_str() {
                Some("finalized") => {
                    if let Some(i) = index {
                        if !finalized[i] {
                            finalized[i] = true;
                            left -= 1;
                        }
                    }
                }
                Some("rejected") | Some("error") => {
                    let what = index.map(|i| deposit_line(&deposits[i]));
                    return Err(format!("deposit refused: {reply} (line {what:?})"));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_ready_line() {
        let line = r#"{"event":"ready","listen":"127.0.0.1:7070","order_entry":"127.0.0.1:7071","market_data":"127.0.0.1:7072","data_dir":"d","height":1,"next_seq":5,"state_root":"00"}"#;
        let ready = parse_ready_line(line).unwrap();
        assert_eq!(ready.addresses.order_entry.port(), 7071);
        assert_eq!(ready.addresses.market_data.port(), 7072);
        assert_eq!(ready.addresses.admin.unwrap().port(), 7070);
        assert!(parse_ready_line(r#"{"event":"stopped"}"#).is_err());
        assert!(parse_ready_line("garbage").is_err());
    }

    #[test]
    fn deposit_lines_are_the_node_syntax() {
        let line = deposit_line(&Deposit {
            account: 123,
            asset: "USD".into(),
            amount: "1000".into(),
        });
        assert_eq!(
            line,
            r#"{"op":"deposit","account":123,"asset":"USD","amount":"1000"}"#
        );
    }
}
