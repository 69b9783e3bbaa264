//! Client connections of the transaction port and who each transaction came from: the events the
//! port's tasks send the host loop, and the answers owed.

use super::*;

/// A client connection's outbox of notices.
pub(super) type ClientOutbox = mpsc::Sender<[u8; txport::NOTICE_LEN]>;

/// What the transaction port's tasks and the gateway thread tell the host.
pub(super) enum ClientEvent {
    /// A client connected; notices for it go to this outbox.
    Connected(u64, ClientOutbox),
    /// A client sent a transaction frame.
    Transaction(u64, Vec<u8>),
    /// A client left.
    Gone(u64),
    /// Sessions of the binary gateway sent these transactions.
    Gateway(Vec<GatewayTx>),
    /// Something happened on the JSON port.
    Json(JsonEvent),
}

/// Who sent a transaction to this validator, to be told what became of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Sender {
    /// A client of the transaction port.
    Port(u64),
    /// A session of the binary gateway (and the message's client seq).
    Gateway(ClientRef),
    /// Line `.1` of JSON connection `.0`.
    Json(u64, u64),
}

impl Sender {
    /// The connection it came through, for its rate limit: (port, connection).
    pub(super) fn connection(self) -> (u8, u64) {
        match self {
            Sender::Port(id) => (0, id),
            Sender::Gateway(client) => (1, client.connection & 0xffff_ffff),
            Sender::Json(id, _) => (2, id),
        }
    }
}

/// What became of a transaction (refusal and eviction with the mempool's code).
pub(super) enum Answer {
    Admitted,
    Refused(u8),
    Finalized(Height),
    Evicted(u8),
}

/// The channels from the client ports to the shell's loop.
pub(super) struct ClientChannels {
    pub(super) tx_port: mpsc::Receiver<ClientEvent>,
    pub(super) json: mpsc::Receiver<JsonEvent>,
    pub(super) gateway: mpsc::Receiver<Vec<GatewayTx>>,
    pub(super) eth: mpsc::Receiver<EthRequest>,
}

/// Accepts clients of the transaction port, one task each.
pub(super) async fn accept_clients(
    listener: tokio::net::TcpListener,
    events: mpsc::Sender<ClientEvent>,
) {
    let mut next_id = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        tokio::spawn(serve_client(next_id, stream, events.clone()));
    }
}

/// One client: reads transaction frames for the host, writes the host's notices back.
async fn serve_client(id: u64, stream: tokio::net::TcpStream, events: mpsc::Sender<ClientEvent>) {
    let (mut reader, mut writer) = stream.into_split();
    let (outbox, mut notices) = mpsc::channel::<[u8; txport::NOTICE_LEN]>(CLIENT_QUEUE);
    if events
        .send(ClientEvent::Connected(id, outbox))
        .await
        .is_err()
    {
        return;
    }
    let write = async move {
        while let Some(notice) = notices.recv().await {
            if writer.write_all(&notice).await.is_err() {
                break;
            }
        }
    };
    let read = async {
        let mut length = [0u8; 4];
        loop {
            if reader.read_exact(&mut length).await.is_err() {
                break;
            }
            let len = u32::from_le_bytes(length) as usize;
            if !txport::frame_length_ok(len) {
                // Answered by the host (it knows the outbox), then the connection ends.
                let _ = events.send(ClientEvent::Transaction(id, Vec::new())).await;
                break;
            }
            let mut bytes = vec![0u8; len];
            if reader.read_exact(&mut bytes).await.is_err() {
                break;
            }
            if events
                .send(ClientEvent::Transaction(id, bytes))
                .await
                .is_err()
            {
                break;
            }
        }
        let _ = events.send(ClientEvent::Gone(id)).await;
    };
    // The writer ends when the host drops the outbox (after `Gone`), so every notice owed
    // before the client left is still written.
    tokio::join!(read, write);
}
