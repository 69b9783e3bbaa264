//! The command blocks of README.md, docs/node.md, docs/pipeline.md and docs/replay.md run as
//! written, in order,
//! each document from a fresh folder (as from a fresh clone), against the built binary.
//!
//! Every ```sh block is split into commands (a trailing `\` continues a line). The folder has
//! `target/debug/nexus` (a link to the binary under test) and `examples/` (a link to the
//! repository's), so the commands run unchanged, with one substitution: README's first
//! command `cargo run -p node --bin nexus -- run` becomes `target/debug/nexus run`, the binary
//! that command builds. Other `cargo` commands (tests, lints, benchmarks) are not run here.
//! A command that starts a node (`nexus run` or `nexus pipeline`) is started in the
//! background and waited for (its `ready` line); the next one stops it first (SIGTERM) and the last is stopped at the
//! end (its `stopped` line checked). Every other command must exit 0, and no reply of a
//! `nexus send` or `nexus query` may be an error or a rejection.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

const NEXUS: &str = env!("CARGO_BIN_EXE_nexus");

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace folder")
        .to_path_buf()
}

/// The commands of every ```sh block of `text`, in order.
fn commands(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            in_block = !in_block && line.trim() == "```sh";
            continue;
        }
        if !in_block {
            continue;
        }
        let trimmed = line.trim();
        if let Some(head) = trimmed.strip_suffix('\\') {
            pending.push_str(head.trim_end());
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let command = std::mem::take(&mut pending);
        let command = command.trim();
        if !command.is_empty() && !command.starts_with('#') {
            out.push(command.to_string());
        }
    }
    out
}

/// A node started by a documented command.
struct Server {
    child: Child,
    stdout: BufReader<ChildStdout>,
    command: String,
    stopped: bool,
}

impl Drop for Server {
    /// A failed test does not leave the node holding the ports.
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Server {
    fn start(folder: &Path, command: &str) -> Server {
        let mut child = Command::new("bash")
            .arg("-c")
            .arg(format!("exec {command}"))
            .current_dir(folder)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("bash");
        let stderr = child.stderr.take().expect("piped");
        let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut ready = String::new();
        stdout.read_line(&mut ready).expect("read ready");
        if !ready.contains("\"ready\"") {
            let _ = child.wait();
            std::thread::sleep(Duration::from_millis(100));
            panic!(
                "`{command}` did not start: {ready:?}\n{}",
                log.lock().unwrap()
            );
        }
        Server {
            child,
            stdout,
            command: command.to_string(),
            stopped: false,
        }
    }

    fn stop(mut self) {
        self.stopped = true;
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let mut stopped = String::new();
        self.stdout.read_line(&mut stopped).expect("read stopped");
        assert!(
            stopped.contains("\"stopped\""),
            "`{}` ended with {stopped:?}",
            self.command
        );
        assert!(self.child.wait().expect("wait").success());
    }
}

/// Runs every command of the document at `path` (relative to the repository) in a new
/// folder. Returns how many commands ran.
fn run_document(path: &str) -> usize {
    let text = std::fs::read_to_string(repository().join(path)).expect("the document");
    let folder = tempfile::tempdir().expect("temporary folder");
    std::fs::create_dir_all(folder.path().join("target/debug")).unwrap();
    std::os::unix::fs::symlink(NEXUS, folder.path().join("target/debug/nexus")).unwrap();
    std::os::unix::fs::symlink(
        repository().join("examples"),
        folder.path().join("examples"),
    )
    .unwrap();
    let mut server: Option<Server> = None;
    let mut ran = 0;
    for command in commands(&text) {
        let command = command.replace("cargo run -p node --bin nexus --", "target/debug/nexus");
        if command.starts_with("cargo ") {
            continue;
        }
        ran += 1;
        eprintln!("{path}: {command}");
        if command.starts_with("target/debug/nexus run")
            || command.starts_with("target/debug/nexus pipeline")
        {
            if let Some(previous) = server.take() {
                previous.stop();
            }
            server = Some(Server::start(folder.path(), &command));
            continue;
        }
        let output = Command::new("bash")
            .arg("-c")
            .arg(&command)
            .current_dir(folder.path())
            .stdin(Stdio::null())
            .output()
            .expect("bash");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{path}: `{command}` failed: {}\n{stdout}",
            String::from_utf8_lossy(&output.stderr)
        );
        if command.contains("nexus send") || command.contains("nexus query") {
            assert!(
                !stdout.trim().is_empty(),
                "{path}: `{command}` printed nothing"
            );
            for reply in stdout.lines() {
                assert!(
                    ![
                        "error",
                        "rejected",
                        "refused",
                        "evicted",
                        "gov_refused",
                        "call_refused"
                    ]
                    .iter()
                    .any(|ev| reply.contains(&format!("\"ev\":\"{ev}\""))),
                    "{path}: `{command}` got {reply}"
                );
            }
        }
    }
    if let Some(server) = server {
        server.stop();
    }
    ran
}

/// Whether the default ports the documents use are free (a developer's running node holds
/// them).
fn default_ports_free() -> bool {
    [
        "127.0.0.1:7070",
        "127.0.0.1:7071",
        "127.0.0.1:7072",
        "127.0.0.1:7073",
        "127.0.0.1:8545",
    ]
    .iter()
    .all(|addr| std::net::TcpListener::bind(addr).is_ok())
}

#[test]
fn the_commands_of_the_readme_and_the_node_pipeline_and_replay_docs_run_as_written() {
    if !default_ports_free() {
        // CI (CI=true) must have them free; elsewhere the test says why it did nothing.
        assert!(
            std::env::var("CI").is_err(),
            "CI: ports 7070-7073 and 8545 must be free"
        );
        eprintln!("readme: skipped, ports 7070-7073 or 8545 are in use (a node is running here)");
        return;
    }
    // Each document from its own fresh folder, one after the other (same ports).
    let readme = run_document("README.md");
    assert!(readme >= 8, "README.md: {readme} commands");
    let node = run_document("docs/node.md");
    assert!(node >= 5, "docs/node.md: {node} commands");
    let pipeline = run_document("docs/pipeline.md");
    assert!(pipeline >= 8, "docs/pipeline.md: {pipeline} commands");
    let replay = run_document("docs/replay.md");
    assert!(replay >= 5, "docs/replay.md: {replay} commands");
}

#[test]
fn command_blocks_are_split_into_commands() {
    let text = "x\n```sh\n# note\na --b \\\n  c\n\nd\n```\n```json\n{}\n```\n";
    assert_eq!(commands(text), vec!["a --b c".to_string(), "d".to_string()]);
}
