//! What the CLI's process tests share.

use std::net::TcpListener;

/// The first of `count` consecutive free loopback ports at or above `from`
/// (order, payment, store, notification, …), looked for in steps of 97.
pub fn free_ports(count: u16, from: u16) -> u16 {
    for base in (from..60_000).step_by(97) {
        if (base..base + count).all(|p| TcpListener::bind(("127.0.0.1", p)).is_ok()) {
            return base;
        }
    }
    panic!("no {count} consecutive free ports");
}
