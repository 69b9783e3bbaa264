//! `nexus send` and `nexus query`: a small client of the JSON Lines port.
//!
//! It writes the lines, half-closes its side and prints every reply line until each line it
//! sent has its last reply: `finalized` for a sequenced line, an `error` or `rejected`
//! without `seq` for a line refused before sequencing, the answer of a query, `subscribe`
//! or co-processor `query`, or `gov_included`/`gov_refused` for a governance action, the
//! `staking` view, or `action_refused`/`action_included`/`action_evicted` for a chain action. With `follow`, it keeps printing (events of followed accounts) until the
//! node closes the connection.

use std::collections::BTreeSet;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Why an exchange with the node failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The node could not be reached or the connection broke.
    #[error("{addr}: {source}")]
    Io {
        /// The node's JSON port.
        addr: SocketAddr,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// Writing the replies failed.
    #[error("writing output: {0}")]
    Output(io::Error),
    /// The node closed the connection before answering every line.
    #[error("the node closed the connection with lines {0:?} unanswered")]
    Unanswered(Vec<u64>),
    /// Replies did not all come within the time limit.
    #[error("no final reply within {0:?} for lines {1:?}")]
    TimedOut(Duration, Vec<u64>),
}

/// Whether `reply` is the last one line `line` gets.
fn is_final(reply: &Value) -> bool {
    let ev = reply.get("ev").and_then(Value::as_str).unwrap_or("");
    match ev {
        "finalized" | "book" | "balances" | "orders" | "positions" | "subscribed" | "refused"
        | "evicted" | "dev_accounts" | "query" | "governance" | "gov_included" | "gov_refused"
        | "staking" | "action_refused" | "action_included" | "action_evicted" => true,
        "error" | "rejected" => reply.get("seq").is_none(),
        _ => false,
    }
}

/// Sends `lines` to the JSON port at `addr` and copies every reply line to `out` until each
/// non-blank line has its last reply (or, with `follow`, until the node closes).
pub fn exchange(
    addr: SocketAddr,
    lines: &[String],
    out: &mut impl Write,
    follow: bool,
    timeout: Duration,
) -> Result<(), ClientError> {
    let io = |source| ClientError::Io { addr, source };
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(io)?;
    let mut owed: BTreeSet<u64> = BTreeSet::new();
    let mut number = 0;
    for line in lines {
        let line = line.trim_end_matches(['\n', '\r']);
        number += 1;
        if !line.trim().is_empty() {
            owed.insert(number);
        }
        stream.write_all(line.as_bytes()).map_err(io)?;
        stream.write_all(b"\n").map_err(io)?;
    }
    if !follow {
        stream.shutdown(Shutdown::Write).map_err(io)?;
    }
    let deadline = Instant::now() + timeout;
    let mut reader = BufReader::new(stream);
    let mut text = String::new();
    while follow || !owed.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if !follow && left.is_zero() {
            return Err(ClientError::TimedOut(timeout, owed.into_iter().collect()));
        }
        let wait = if follow { None } else { Some(left) };
        reader.get_ref().set_read_timeout(wait).map_err(io)?;
        text.clear();
        match reader.read_line(&mut text) {
            Ok(0) if follow => return Ok(()),
            Ok(0) => return Err(ClientError::Unanswered(owed.into_iter().collect())),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Err(io(e)),
        }
        out.write_all(text.as_bytes())
            .and_then(|()| out.flush())
            .map_err(ClientError::Output)?;
        if let Ok(reply) = serde_json::from_str::<Value>(&text) {
            if let Some(line) = reply.get("line").and_then(Value::as_u64) {
                if is_final(&reply) {
                    owed.remove(&line);
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn final_replies_are_recognised() {
        assert!(is_final(&json!({"ev": "finalized", "line": 1, "seq": 3})));
        assert!(is_final(
            &json!({"ev": "rejected", "line": 1, "reason": "overloaded"})
        ));
        assert!(!is_final(
            &json!({"ev": "rejected", "line": 1, "seq": 4, "reason": "insufficient_balance"})
        ));
        assert!(!is_final(&json!({"ev": "sequenced", "line": 1, "seq": 4})));
        assert!(is_final(&json!({"ev": "book", "line": 2})));
    }
}
