//! A TCP relay from an address of this machine's Docker bridge to a test server on
//! 127.0.0.1, for tests/it/sam_local.rs.
//!
//! SAM CLI puts its Lambda containers on Docker's default bridge network (with
//! `--docker-network host` too: it then only skips connecting them to another network),
//! where 127.0.0.1 is the container's own loopback. The bridge's gateway address belongs
//! to this machine; the relay listens there and copies bytes both ways to the server's
//! 127.0.0.1 port, so the servers keep their loopback-only addresses and nothing leaves
//! the machine.
//!
//! It also counts the connections it relays: on 127.0.0.1 in front of the registry it
//! shows whether a client reuses its connections (functions/*/tests/lambda_runtime.rs).
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

pub struct BridgeRelay {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    connections: Arc<AtomicUsize>,
}

impl BridgeRelay {
    /// Listens on `listen_ip` (a free port) and relays every connection to
    /// 127.0.0.1:`upstream_port`.
    pub fn start(listen_ip: &str, upstream_port: u16) -> Self {
        let listener = TcpListener::bind((listen_ip, 0))
            .unwrap_or_else(|e| panic!("bind {listen_ip}:0 for the relay: {e}"));
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = connections.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                counted.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                let (client2, server2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pipe(client, server));
                std::thread::spawn(move || pipe(server2, client2));
            }
        });
        BridgeRelay {
            addr,
            stop,
            connections,
        }
    }

    /// How many connections clients opened to the relay so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// `http://IP:PORT` of the relay.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// Copies `from` to `to` until `from` ends, then ends `to`'s sending side.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

impl Drop for BridgeRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect(self.addr);
    }
}
