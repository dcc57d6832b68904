//! The thread bookkeeping of a loopback TCP server, shared by the echo upstreams: one accept
//! thread, one thread per connection, and a stop that closes every open connection and joins
//! every thread (so a test that fails leaves nothing running).

use std::collections::HashMap;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use crate::Result;

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the connection threads share with the server.
#[derive(Default)]
pub struct Tracker {
    stopping: AtomicBool,
    next_conn: AtomicU64,
    conns: Mutex<HashMap<u64, TcpStream>>,
    handlers: Mutex<Vec<JoinHandle<()>>>,
}

impl Tracker {
    /// The server is stopping: a connection thread leaves at its next chance.
    pub fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }
}

/// A running server on a bound listener.
pub struct Server {
    addr: SocketAddr,
    tracker: Arc<Tracker>,
    accept: Option<JoinHandle<()>>,
}

impl Server {
    /// Accepts on `listener` (thread `<name>-accept-<port>`) and runs `serve` for every
    /// connection in a thread of its own (`<name>-conn-<n>`).
    pub fn start<F>(listener: TcpListener, name: &str, serve: F) -> Result<Server>
    where
        F: Fn(TcpStream, &Tracker) + Send + Sync + 'static,
    {
        let addr = listener.local_addr()?;
        let tracker = Arc::new(Tracker::default());
        let accept_tracker = Arc::clone(&tracker);
        let conn_name = format!("{name}-conn");
        let serve = Arc::new(serve);
        let accept = std::thread::Builder::new()
            .name(format!("{name}-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, &conn_name, accept_tracker, serve))
            .with_context(|| format!("spawning the {name} accept thread"))?;
        Ok(Server { addr, tracker, accept: Some(accept) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, closes every open connection and joins every thread. Idempotent.
    pub fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.tracker.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with one last connection; it sees `stopping` and leaves.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = accept.join();
        for (_, conn) in lock(&self.tracker.conns).drain() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        let handlers: Vec<JoinHandle<()>> = lock(&self.tracker.handlers).drain(..).collect();
        for handler in handlers {
            let _ = handler.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop<F>(listener: TcpListener, conn_name: &str, tracker: Arc<Tracker>, serve: Arc<F>)
where
    F: Fn(TcpStream, &Tracker) + Send + Sync + 'static,
{
    for stream in listener.incoming() {
        if tracker.stopping() {
            break;
        }
        let Ok(stream) = stream else { continue };
        let id = tracker.next_conn.fetch_add(1, Ordering::Relaxed);
        if let Ok(clone) = stream.try_clone() {
            lock(&tracker.conns).insert(id, clone);
        }
        let conn_tracker = Arc::clone(&tracker);
        let serve = Arc::clone(&serve);
        let spawned = std::thread::Builder::new().name(format!("{conn_name}-{id}")).spawn(move || {
            serve(stream, &conn_tracker);
            lock(&conn_tracker.conns).remove(&id);
        });
        if let Ok(handle) = spawned {
            let mut handlers = lock(&tracker.handlers);
            handlers.retain(|h| !h.is_finished());
            handlers.push(handle);
        }
    }
}
