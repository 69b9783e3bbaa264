//! Issue #12, item 14: the built `nexus-evm` binary (a thin mode of the node: `nexus run`'s
//! chain of one with the EVM genesis) stops cleanly (exit status 0, a `stopped` line) on
//! SIGINT even when started with SIGINT ignored, as a background job of a non-interactive
//! shell is (`SIG_IGN` is inherited across `exec`), and on SIGTERM.
//! Time bounds are generous and only guard against hanging; nothing asserts speed.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long the binary may take to start serving, or to exit after the signal.
const BOUND: Duration = Duration::from_secs(60);

/// Starts `nexus-evm` on an ephemeral port through `sh -c '<prelude>; exec nexus-evm ...'`
/// and waits for its "JSON-RPC on" line (handlers are installed before it is printed).
/// Returns the child and a channel of its later stderr lines.
fn start(prelude: &str) -> (Child, mpsc::Receiver<String>) {
    let script = format!("{prelude}; exec \"$0\" --rpc 127.0.0.1:0 --block-ms 50");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_nexus-evm"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let (tx, rx) = mpsc::channel();
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    forward(stdout, tx.clone());
    forward(stderr, tx);
    let deadline = Instant::now() + BOUND;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("JSON-RPC on") => return (child, rx),
            Ok(_) => {}
            Err(e) => {
                let _ = child.kill();
                panic!("nexus-evm did not start: {e}");
            }
        }
    }
}

/// Sends every line of `pipe` to `tx`, on a thread.
fn forward(pipe: impl std::io::Read + Send + 'static, tx: mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

/// Sends `signal` (a `kill -s` name) to the child and polls until it exits, within
/// [`BOUND`]; a child still running then is killed and the test fails.
fn signal_and_wait(child: &mut Child, signal: &str) -> ExitStatus {
    let status = Command::new("kill")
        .args(["-s", signal, &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -s {signal}");
    let deadline = Instant::now() + BOUND;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nexus-evm still running {BOUND:?} after SIG{signal}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_stopped(status: ExitStatus, rx: &mpsc::Receiver<String>, signal: &str) {
    assert!(status.success(), "SIG{signal}: exit status {status:?}");
    let lines: Vec<String> = rx.try_iter().collect();
    assert!(
        lines.iter().any(|l| l.contains("\"event\":\"stopped\"")),
        "SIG{signal}: {lines:?}"
    );
}

#[test]
fn sigint_stops_nexus_evm_even_when_inherited_as_ignored() {
    // `trap "" INT` sets SIGINT to SIG_IGN, which `exec` passes on to nexus-evm.
    let (mut child, rx) = start("trap '' INT");
    let status = signal_and_wait(&mut child, "INT");
    assert_stopped(status, &rx, "INT");
}

#[test]
fn sigterm_stops_nexus_evm_cleanly() {
    let (mut child, rx) = start("true");
    let status = signal_and_wait(&mut child, "TERM");
    assert_stopped(status, &rx, "TERM");
}
