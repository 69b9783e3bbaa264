//! The server's TCP connections (docs/evm.md, "The validator's JSON-RPC").
//!
//! Accepted here rather than by jsonrpsee's `Server`, which holds a connection permit only
//! while one of an HTTP connection's requests is in progress (so idle keep-alive
//! connections were bounded by nothing but the process's file limit). Here each connection
//! holds a permit from accept until its socket is closed: the permit is inside the
//! [`Socket`] hyper reads and writes, which hyper hands over to the WebSocket on an
//! upgrade, so it is released exactly when the file descriptor is. A connection over
//! [`Limits::connections`] is closed at once, unanswered. A watchdog per connection closes
//! one that has had no call in progress and no live subscription ([`Connection::busy`]) for
//! [`Limits::idle`], by shutting its socket down in both directions: whoever reads it sees
//! the end, whoever writes it an error, HTTP and WebSocket alike.

use std::future::Future;
use std::io;
use std::net::Shutdown;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use jsonrpsee::server::{HttpRequest, StopHandle};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

/// How long the accept loop waits after a failed accept (out of file descriptors, say: the
/// error would repeat at once until something closes).
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

/// The bounds on the server's connections.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Most TCP connections open at once.
    pub connections: usize,
    /// How long a connection may have nothing in progress before it is closed.
    pub idle: Duration,
}

/// A TCP connection as its calls see it: an extension of each of its requests.
#[derive(Clone, Debug)]
pub(crate) struct Connection {
    /// The connection's number: distinct, increasing in the order connections are accepted.
    pub id: u64,
    activity: Arc<Activity>,
}

impl Connection {
    /// Marks a call or a live subscription of this connection until the guard is dropped:
    /// meanwhile the connection is not idle.
    pub(crate) fn busy(&self) -> Busy {
        self.activity.lock().in_progress += 1;
        Busy(self.activity.clone())
    }
}

/// What a connection has in progress.
#[derive(Debug)]
struct Activity(Mutex<State>);

/// [`Activity`]'s state.
#[derive(Debug)]
struct State {
    /// Calls and subscriptions in progress.
    in_progress: usize,
    /// When the last of them ended (or the connection opened).
    idle_since: Instant,
}

impl Activity {
    /// A connection opened now, with nothing in progress.
    fn new() -> Arc<Activity> {
        let state = State {
            in_progress: 0,
            idle_since: Instant::now(),
        };
        Arc::new(Activity(Mutex::new(state)))
    }

    /// The state (nothing panics while holding the lock, so a poisoned one is whole).
    fn lock(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// When the connection is to be closed unless something starts meanwhile: `idle` after
    /// the last call ended; with one in progress, `idle` from `now` (to be looked at again).
    fn deadline(&self, idle: Duration, now: Instant) -> Instant {
        let state = self.lock();
        if state.in_progress == 0 {
            state.idle_since + idle
        } else {
            now + idle
        }
    }
}

/// A call or subscription in progress ([`Connection::busy`]).
#[derive(Debug)]
pub(crate) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.0.lock();
        assert!(state.in_progress > 0, "each guard counted once");
        state.in_progress -= 1;
        if state.in_progress == 0 {
            state.idle_since = Instant::now();
        }
    }
}

/// Accepts connections on `listener` until `stop`, each served by `serve` with a permit
/// held until its socket is closed; one over `limits.connections` is closed at once.
pub(crate) async fn accept<F, S>(listener: TcpListener, limits: Limits, stop: StopHandle, serve: F)
where
    F: Fn(Socket, Connection, StopHandle) -> S,
    S: Future + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limits.connections));
    let mut next_id = 0u64;
    let stopped = stop.clone().shutdown();
    tokio::pin!(stopped);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut stopped => return,
        };
        let Ok((stream, _)) = accepted else {
            tokio::time::sleep(ACCEPT_PAUSE).await;
            continue;
        };
        // Over the cap the stream is dropped here: closed, nothing read or written.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            continue;
        };
        let connection = Connection {
            id: next_id,
            activity: Activity::new(),
        };
        next_id += 1;
        let socket = open(stream, permit, &connection, limits.idle);
        let served = serve(socket, connection, stop.clone());
        // A connection's end, clean or not, concerns only its client.
        tokio::spawn(async move {
            served.await;
        });
    }
}

/// The socket of a connection just accepted, with its idle watchdog started.
fn open(
    stream: TcpStream,
    permit: OwnedSemaphorePermit,
    connection: &Connection,
    idle: Duration,
) -> Socket {
    // As jsonrpsee's own server: answers are whole messages, sent at once.
    let _ = stream.set_nodelay(true);
    let stream = Arc::new(stream);
    let (open, closed) = oneshot::channel();
    let activity = connection.activity.clone();
    tokio::spawn(close_when_idle(
        Arc::downgrade(&stream),
        activity,
        idle,
        closed,
    ));
    Socket {
        stream,
        _permit: permit,
        _open: open,
    }
}

/// Shuts the connection's socket down once it has had nothing in progress for `idle`;
/// returns then, or when the socket is closed (`closed` ends). Wakes at most once per
/// `idle` while the connection is busy.
async fn close_when_idle(
    stream: Weak<TcpStream>,
    activity: Arc<Activity>,
    idle: Duration,
    mut closed: oneshot::Receiver<()>,
) {
    loop {
        let now = Instant::now();
        let deadline = activity.deadline(idle, now);
        if deadline <= now {
            break;
        }
        tokio::select! {
            _ = &mut closed => return,
            () = tokio::time::sleep_until(deadline) => {}
        }
    }
    // The socket's only strong reference is its `Socket`'s: gone if it is closed.
    if let Some(stream) = stream.upgrade() {
        let _ = socket2::SockRef::from(&*stream).shutdown(Shutdown::Both);
    }
}

/// A connection's socket as hyper (and, after an upgrade, the WebSocket) reads and writes
/// it. It holds the connection's permit, released when the socket is closed.
pub(crate) struct Socket {
    /// Shared only with the watchdog, which holds a weak reference.
    stream: Arc<TcpStream>,
    _permit: OwnedSemaphorePermit,
    /// Dropped with the socket: tells the watchdog it is closed.
    _open: oneshot::Sender<()>,
}

impl AsyncRead for Socket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        // A `WouldBlock` clears the stream's readiness, so the next poll waits: at most two
        // rounds per wake.
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            match self.stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for Socket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        // As `poll_read`: at most two rounds per wake.
        loop {
            ready!(self.stream.poll_write_ready(cx))?;
            match self.stream.try_write(data) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                written => return Poll::Ready(written),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Writes go straight to the socket.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        let shut = socket2::SockRef::from(&*self.stream).shutdown(Shutdown::Write);
        // A peer already gone has nothing more to be told.
        Poll::Ready(match shut {
            Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(()),
            shut => shut,
        })
    }
}

/// jsonrpsee's service for one connection, adding the [`Connection`] to each request (its
/// calls read it from their extensions; a WebSocket's calls from its upgrade request's).
#[derive(Clone, Debug)]
pub(crate) struct WithConnection<S> {
    /// jsonrpsee's service, built for this connection.
    pub inner: S,
    /// The connection.
    pub connection: Connection,
}

impl<S, B> tower_service::Service<HttpRequest<B>> for WithConnection<S>
where
    S: tower_service::Service<HttpRequest<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: HttpRequest<B>) -> S::Future {
        request.extensions_mut().insert(self.connection.clone());
        self.inner.call(request)
    }
}
