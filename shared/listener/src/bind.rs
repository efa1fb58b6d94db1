//! Binding a configured listen address, with an error that names the setting.
//!
//! "Address already in use" alone sends an operator hunting through every port of a host; the
//! error here says which setting holds the address and what to change, e.g. for a second
//! worker agent on one host: "cannot listen on admin_addr 127.0.0.1:3683: address in use
//! (another process holds it; set admin_addr to a free port)".

use std::io;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpSocket};

/// A listen address that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {setting} {addr}: {}{}", describe(.source), hint(.source, .setting))]
pub struct BindError {
    /// The configuration key the address came from, e.g. `admin_addr` or `listen.api_addr`.
    pub setting: String,
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

fn describe(err: &io::Error) -> String {
    match err.kind() {
        io::ErrorKind::AddrInUse => "address in use".to_owned(),
        io::ErrorKind::AddrNotAvailable => "no interface of this host has that address".to_owned(),
        io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => err.to_string(),
    }
}

fn hint(err: &io::Error, setting: &str) -> String {
    match err.kind() {
        io::ErrorKind::AddrInUse => format!(" (another process holds it; set {setting} to a free port)"),
        io::ErrorKind::PermissionDenied => {
            format!(" (ports below 1024 need privileges; set {setting} to a higher port)")
        }
        _ => String::new(),
    }
}

/// Binds `addr`, the value of the setting `setting`, with the OS's default backlog.
pub async fn bind(setting: &str, addr: SocketAddr) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr).await.map_err(|source| BindError { setting: setting.to_owned(), addr, source })
}

/// Binds `addr` with `SO_REUSEADDR` and an accept backlog of `backlog` (for ports thousands
/// of clients reconnect to at once).
pub fn bind_with_backlog(setting: &str, addr: SocketAddr, backlog: u32) -> Result<TcpListener, BindError> {
    let listen = || {
        let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(backlog)
    };
    listen().map_err(|source| BindError { setting: setting.to_owned(), addr, source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_names_the_setting_and_the_way_out() {
        let held = bind("admin_addr", "127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = held.local_addr().unwrap();
        let err = bind("admin_addr", addr).await.unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "cannot listen on admin_addr {addr}: address in use (another process holds it; set admin_addr to a free port)"
            )
        );
        let err = bind_with_backlog("listen_addr", addr, 16).unwrap_err().to_string();
        assert!(err.starts_with(&format!("cannot listen on listen_addr {addr}: address in use")), "{err}");
    }

    #[tokio::test]
    async fn an_address_of_no_interface_says_so() {
        let err = bind("listen.api_addr", "192.0.2.1:0".parse().unwrap()).await.unwrap_err().to_string();
        assert!(err.contains("listen.api_addr 192.0.2.1:0") && err.contains("no interface"), "{err}");
    }
}
