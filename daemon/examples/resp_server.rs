//! Runs only tandemd's RESP component on a loopback port (no cluster): for trying clients and
//! for comparing with redis-server (`redis-benchmark -p PORT`).
//!
//! Usage: `cargo run -p tandemd --example resp_server -- [PORT] [--hold] [--requirepass PW]`
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use tandemd::engine::store;
use tandemd::resp::commands;
use tandemd::resp::server::{standalone, RespServerConfig};

fn main() -> std::io::Result<()> {
    let mut port = 6380u16;
    let mut hold = false;
    let mut requirepass = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--hold" => hold = true,
            "--requirepass" => requirepass = args.next().map(String::into_bytes),
            p => match p.parse() {
                Ok(n) => port = n,
                Err(_) => {
                    eprintln!("usage: resp_server [PORT] [--hold] [--requirepass PW]");
                    std::process::exit(2);
                }
            },
        }
    }
    let server = RespServerConfig {
        bind: ([127, 0, 0, 1], port).into(),
        ..RespServerConfig::default()
    };
    let cmds = commands::CommandConfig {
        requirepass,
        tcp_port: port,
        ..commands::CommandConfig::default()
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, handle) = standalone::spawn(server, cmds, store::Limits::default(), hold, stop)?;
    eprintln!("resp_server listening on {addr} (hold writes: {hold})");
    handle
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("server thread panicked")))
}
