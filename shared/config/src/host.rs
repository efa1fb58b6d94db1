//! This host's name, for defaults that name the machine (a gateway's advertised address, a
//! worker's profile).

/// The kernel's hostname, else `/etc/hostname`, else `$HOSTNAME`; `None` when all are empty.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .ok()
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|name| !name.is_empty()))
}
