//! Power saving on the worker side: which MAC address wakes this machine (sent in `Register`),
//! and running the sleep command when the orchestrator says `Sleep`.
//!
//! The MAC is the one of the network interface that holds the local address of the connection
//! to the orchestrator: the interface a magic packet from the orchestrator's LAN arrives on.
//! Linux only (it reads /proc/net and /sys/class/net); elsewhere it is unknown unless given
//! with `--wol-mac`, and a worker with no MAC is never told to sleep.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::Path,
};

use clusterplex_core::rpc::{format_mac, parse_mac};
use tonic::codegen::http::Uri;

/// The wake MAC to register with: `configured` when given, else the MAC of the interface that
/// reaches `orchestrator_url`; empty when unknown.
pub async fn wake_mac(configured: Option<&str>, orchestrator_url: &str) -> String {
    if let Some(m) = configured {
        return m.to_string();
    }
    let Some(local) = local_ip_towards(orchestrator_url).await else {
        return String::new();
    };
    let mac = mac_of_local_ip(local, Path::new("/proc/net"), Path::new("/sys/class/net"));
    if mac.is_none() {
        tracing::debug!(%local, "no wake MAC found for the local address");
    }
    mac.unwrap_or_default()
}

/// The local address this machine uses to reach the orchestrator. A connected UDP socket
/// asks the kernel's routing without sending anything.
async fn local_ip_towards(url: &str) -> Option<IpAddr> {
    let uri: Uri = url.parse().ok()?;
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let remote = tokio::net::lookup_host((host, port)).await.ok()?.next()?;
    let any = match remote {
        SocketAddr::V4(_) => SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
        SocketAddr::V6(_) => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
    };
    let socket = tokio::net::UdpSocket::bind(any).await.ok()?;
    socket.connect(remote).await.ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// The MAC (`aa:bb:cc:dd:ee:ff`) of the interface that holds `local`, from `proc_net`'s
/// `route` (IPv4: the on-link subnet that contains the address) or `if_inet6` (IPv6: the
/// address itself) and `sys_net/<interface>/address`. None for loopback and unknown ones.
pub fn mac_of_local_ip(local: IpAddr, proc_net: &Path, sys_net: &Path) -> Option<String> {
    let read = |p: &Path| std::fs::read_to_string(p).ok();
    let iface = match local {
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
            iface_of_v6(&read(&proc_net.join("if_inet6"))?, v6)?
        }
        IpAddr::V6(v6) => iface_of_v4(&read(&proc_net.join("route"))?, v6.to_ipv4_mapped()?)?,
        IpAddr::V4(v4) => iface_of_v4(&read(&proc_net.join("route"))?, v4)?,
    };
    // An interface name is one path component; refuse anything else.
    if iface.is_empty() || iface.contains('/') || iface.starts_with('.') {
        return None;
    }
    let mac = parse_mac(&read(&sys_net.join(&iface).join("address"))?)?;
    Some(format_mac(&mac))
}

/// The interface of the most specific on-link route (no gateway) whose subnet contains `ip`.
/// /proc/net/route prints addresses as the in-memory (network-order) u32 in hex.
fn iface_of_v4(route: &str, ip: Ipv4Addr) -> Option<String> {
    let addr = |hex: &str| u32::from_str_radix(hex, 16).ok().map(u32::to_ne_bytes);
    let ip = u32::from_be_bytes(ip.octets());
    route
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, gateway, mask) = (f.first()?, f.get(1)?, f.get(2)?, f.get(7)?);
            let dest = u32::from_be_bytes(addr(dest)?);
            let mask = u32::from_be_bytes(addr(mask)?);
            let on_link = addr(gateway)? == [0; 4];
            (on_link && mask != 0 && ip & mask == dest & mask)
                .then(|| (mask.count_ones(), iface.to_string()))
        })
        .max_by_key(|(bits, _)| *bits)
        .map(|(_, iface)| iface)
}

/// The interface that holds IPv6 address `ip` in /proc/net/if_inet6.
fn iface_of_v6(if_inet6: &str, ip: Ipv6Addr) -> Option<String> {
    let want = ip
        .octets()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>();
    if_inet6.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        (f.len() >= 6 && f[0].eq_ignore_ascii_case(&want)).then(|| f[5].to_string())
    })
}

/// Runs the sleep command through `sh -c` (the orchestrator said `Sleep` and no job runs).
/// A failure is logged and nothing else happens: the worker stays registered and usable.
pub async fn run_sleep_command(command: String) {
    let command = command.as_str();
    tracing::info!(command, "idle: going to sleep (sleep command)");
    match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .kill_on_drop(false)
        .status()
        .await
    {
        Ok(st) if st.success() => tracing::info!("sleep command done"),
        Ok(st) => tracing::warn!(command, "sleep command failed: {st}"),
        Err(e) => tracing::warn!(command, "sleep command could not start: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // /proc/net/route on a box with 192.168.1.23/24 on eth0, a VPN on 10.8.0.0/16 and a
    // default route; written the way the kernel prints it on little-endian machines.
    fn route_fixture() -> String {
        let hex = |a: [u8; 4]| format!("{:08X}", u32::from_ne_bytes(a));
        let row = |iface: &str, dest: [u8; 4], gw: [u8; 4], mask: [u8; 4]| {
            format!(
                "{iface}\t{}\t{}\t0003\t0\t0\t100\t{}\t0\t0\t0\n",
                hex(dest),
                hex(gw),
                hex(mask)
            )
        };
        let mut s =
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
                .to_string();
        s += &row("eth0", [0, 0, 0, 0], [192, 168, 1, 1], [0, 0, 0, 0]);
        s += &row("eth0", [192, 168, 1, 0], [0; 4], [255, 255, 255, 0]);
        s += &row("wg0", [10, 8, 0, 0], [0; 4], [255, 255, 0, 0]);
        s += &row("wg1", [10, 8, 3, 0], [0; 4], [255, 255, 255, 0]);
        s
    }

    #[test]
    fn ipv4_interface_is_the_on_link_subnet_holding_the_address() {
        let r = route_fixture();
        assert_eq!(
            iface_of_v4(&r, Ipv4Addr::new(192, 168, 1, 23)).as_deref(),
            Some("eth0")
        );
        // The most specific subnet wins.
        assert_eq!(
            iface_of_v4(&r, Ipv4Addr::new(10, 8, 3, 9)).as_deref(),
            Some("wg1")
        );
        assert_eq!(
            iface_of_v4(&r, Ipv4Addr::new(10, 8, 7, 9)).as_deref(),
            Some("wg0")
        );
        // Only reachable through the default route: no interface holds it.
        assert_eq!(iface_of_v4(&r, Ipv4Addr::new(127, 0, 0, 1)), None);
        assert_eq!(iface_of_v4("", Ipv4Addr::new(192, 168, 1, 23)), None);
    }

    #[test]
    fn ipv6_interface_is_the_one_holding_the_address() {
        let t = "fe80000000000000021b21fffeaabc0f 02 40 20 80     eth0\n\
                 00000000000000000000000000000001 01 80 10 80       lo\n";
        let ip: Ipv6Addr = "fe80::21b:21ff:feaa:bc0f".parse().unwrap();
        assert_eq!(iface_of_v6(t, ip).as_deref(), Some("eth0"));
        assert_eq!(iface_of_v6(t, "fe80::1".parse().unwrap()), None);
    }

    #[test]
    fn mac_comes_from_sys_class_net() {
        let tmp = tempfile::tempdir().unwrap();
        let (proc_net, sys_net) = (tmp.path().join("proc"), tmp.path().join("sys"));
        std::fs::create_dir_all(&proc_net).unwrap();
        std::fs::create_dir_all(sys_net.join("eth0")).unwrap();
        std::fs::create_dir_all(sys_net.join("wg0")).unwrap();
        std::fs::write(proc_net.join("route"), route_fixture()).unwrap();
        std::fs::write(sys_net.join("eth0/address"), "00:1B:21:AA:BC:0F\n").unwrap();
        // A tunnel has no hardware address.
        std::fs::write(sys_net.join("wg0/address"), "\n").unwrap();
        let mac = |ip: [u8; 4]| mac_of_local_ip(IpAddr::from(ip), &proc_net, &sys_net);
        assert_eq!(mac([192, 168, 1, 23]).as_deref(), Some("00:1b:21:aa:bc:0f"));
        let mapped = IpAddr::V6(Ipv4Addr::new(192, 168, 1, 23).to_ipv6_mapped());
        assert_eq!(
            mac_of_local_ip(mapped, &proc_net, &sys_net).as_deref(),
            Some("00:1b:21:aa:bc:0f")
        );
        assert_eq!(mac([10, 8, 0, 2]), None);
        assert_eq!(mac([172, 16, 0, 2]), None);
    }

    #[tokio::test]
    async fn configured_mac_wins_and_loopback_has_none() {
        assert_eq!(
            wake_mac(Some("02:00:00:00:00:01"), "http://127.0.0.1:1").await,
            "02:00:00:00:00:01"
        );
        // Loopback (all-zero MAC, no on-link route): unknown, so never told to sleep.
        assert_eq!(wake_mac(None, "http://127.0.0.1:3500").await, "");
        assert_eq!(wake_mac(None, "not a url").await, "");
    }

    #[tokio::test]
    async fn a_failing_sleep_command_is_only_logged() {
        let tmp = tempfile::tempdir().unwrap();
        let marker = tmp.path().join("ran");
        run_sleep_command(format!("echo yes > '{}'; exit 3", marker.display())).await;
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), "yes\n");
        run_sleep_command("/nonexistent/suspend-now".into()).await;
    }
}
