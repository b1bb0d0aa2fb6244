//! What TCP connections cost in memory, read from the process's resident
//! set (one test in its own binary, so nothing else runs beside it).

// A counting allocator and libc calls, each with its SAFETY comment.
#![allow(unsafe_code)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;
use underpass_stack::{Accepted, ConnId, TcpError, TcpState};

const MIB: usize = 1 << 20;

/// Resident bytes of the process, after the allocator handed back what
/// it keeps free (glibc keeps a thread's arena: packets freed after a
/// transfer are not ours to count).
fn resident() -> usize {
    // SAFETY: malloc_trim only returns free memory to the kernel.
    unsafe { libc::malloc_trim(0) };
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: usize = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// `n` connections from the client, accepted by the gateway.
fn open(net: &mut Net, n: usize) -> Vec<(ConnId, ConnId)> {
    let client: Vec<ConnId> = (0..n)
        .map(|i| {
            let dst = SocketAddr::new(
                format!("198.51.100.{}", 1 + i % 250).parse().unwrap(),
                80 + (i / 250) as u16,
            );
            net.stack(CLIENT).tcp_connect(dst).unwrap()
        })
        .collect();
    let mut gateway = Vec::new();
    net.run_until(Duration::from_secs(10), "the connections", |net| {
        while let Some(a) = net.poll_accepted() {
            if let Accepted::Tcp { conn, .. } = a {
                net.stack(GATEWAY).tcp_accept(conn).unwrap();
                gateway.push(conn);
            }
        }
        gateway.len() == n
    });
    net.run_until(Duration::from_secs(10), "both ends established", |net| {
        client
            .iter()
            .all(|&c| net.stack(CLIENT).tcp_state(c) == Ok(TcpState::Established))
            && gateway
                .iter()
                .all(|&g| net.stack(GATEWAY).tcp_state(g) == Ok(TcpState::Established))
    });
    // Accepted in the order the SYNs came: pair them by endpoints.
    let mut pairs = Vec::new();
    for c in client {
        let (local, _) = net.stack(CLIENT).tcp_endpoints(c).unwrap();
        let g = *gateway
            .iter()
            .find(|&&g| net.stack(GATEWAY).tcp_endpoints(g).unwrap().1 == local)
            .unwrap();
        pairs.push((c, g));
    }
    pairs
}

/// Every gateway end sends `len` bytes to its client end; all read as
/// they come, until everything arrived.
fn download_all(net: &mut Net, pairs: &[(ConnId, ConnId)], len: usize) -> usize {
    let chunk = vec![7u8; 64 * 1024];
    let mut sent = vec![0usize; pairs.len()];
    let mut got = vec![0usize; pairs.len()];
    let mut peak = 0;
    net.run_until(Duration::from_secs(300), "the downloads", |net| {
        for (i, &(c, g)) in pairs.iter().enumerate() {
            while sent[i] < len {
                let n = (len - sent[i]).min(chunk.len());
                match net.stack(GATEWAY).tcp_write(g, &chunk[..n]) {
                    Ok(n) => sent[i] += n,
                    Err(TcpError::WouldBlock) => break,
                    Err(e) => panic!("{e}"),
                }
            }
            while let Ok(n) = net.stack(CLIENT).tcp_read_with(c, |d| d.len()) {
                if n == 0 {
                    break;
                }
                got[i] += n;
            }
        }
        peak = peak.max(resident());
        got.iter().all(|&g| g == len)
    });
    // Let the last ACKs land, so the senders are done too.
    net.run_until(Duration::from_secs(10), "the last ACKs", |net| {
        pairs
            .iter()
            .all(|&(_, g)| net.stack(GATEWAY).tcp_unacked(g) == Ok(0))
    });
    peak
}

#[test]
fn idle_connections_hold_a_few_pages_and_drained_ones_give_theirs_back() {
    // As the binary does: buffers come from fresh pages, which cost
    // nothing until written.
    // SAFETY: before any other thread of this test binary allocates.
    unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 64 * 1024) };
    // A 2 ms path with a gigabit bottleneck: windows as a LAN's.
    let link = Link::wan(Duration::from_millis(2), 1000, 0.0);
    let mut net = Net::new(3, link);
    net.handshake();
    // Warm up the allocator and the simulator's pools on a few.
    let warm = open(&mut net, 8);
    download_all(&mut net, &warm, MIB);
    for (c, g) in warm {
        net.stack(CLIENT).tcp_close(c);
        net.stack(GATEWAY).tcp_close(g);
    }
    net.run_until(Duration::from_secs(30), "the closes", |net| {
        net.stack(CLIENT).tcp_closing() == 0 && net.stack(GATEWAY).tcp_closing() == 0
    });

    // Idle: a request and a reply each, then nothing.
    let before = resident();
    let idle = open(&mut net, 500);
    for &(c, g) in &idle {
        net.stack(CLIENT).tcp_write(c, &[1; 300]).unwrap();
        net.stack(GATEWAY).tcp_write(g, &[2; 2000]).unwrap();
    }
    net.run_until(Duration::from_secs(10), "the replies", |net| {
        idle.iter().all(|&(c, g)| {
            let mut buf = [0u8; 4096];
            let a = net.stack(CLIENT).tcp_read(c, &mut buf).is_ok();
            let b = net.stack(GATEWAY).tcp_read(g, &mut buf).is_ok();
            a && b
                || net.stack(CLIENT).tcp_unacked(c) == Ok(0)
                    && net.stack(GATEWAY).tcp_unacked(g) == Ok(0)
        })
    });
    let per_connection = resident().saturating_sub(before) / idle.len();
    eprintln!("idle: {per_connection} bytes resident per connection (both ends)");
    // Two ends, each a smoltcp socket, our flow record, and a page or two
    // of each buffer: ~10-20 KiB an end before this work, and still.
    assert!(
        per_connection <= 48 << 10,
        "{per_connection} bytes per idle connection"
    );

    // Drained: 8 transfers of 8 MiB, then quiet.
    let before = resident();
    let bulk = open(&mut net, 8);
    let peak = download_all(&mut net, &bulk, 8 * MIB);
    // A buffer gives its pages back once it stayed empty a moment (not
    // each time a reader catches up).
    net.run_until(
        Duration::from_secs(10),
        "the drained buffers' release",
        |net| {
            net.stack(CLIENT).stats().buffer_resident + net.stack(GATEWAY).stats().buffer_resident
                < 4 * MIB
        },
    );
    let after = resident();
    let stats = (net.stack(CLIENT).stats(), net.stack(GATEWAY).stats());
    eprintln!(
        "8 x 8 MiB: resident {} MiB before, {} MiB at the peak, {} MiB after; buffers counted resident {} / {} bytes",
        before >> 20,
        peak >> 20,
        after >> 20,
        stats.0.buffer_resident,
        stats.1.buffer_resident,
    );
    assert!(peak > before + 32 * MIB, "the transfers did use memory");
    assert!(
        after.saturating_sub(before) < (peak - before) / 8,
        "drained connections gave their pages back: {} MiB held of {} MiB at the peak",
        after.saturating_sub(before) >> 20,
        (peak - before) >> 20
    );
    assert!(stats.0.buffer_resident + stats.1.buffer_resident < 4 * MIB);
    drop(net);

    // A budget: 16 transfers where the buffers may take 16 MiB per end.
    // Without it they would take up to ~16 MiB each (their rings, written
    // through); with it, windows stay small and pages go back behind the
    // data.
    let budget = 16 * MIB;
    let mut net = Net::with(
        4,
        CLEAN,
        |o| o.buffer_budget = budget,
        |o| o.buffer_budget = budget,
    );
    net.handshake();
    let before = resident();
    let bulk = open(&mut net, 16);
    let peak = download_all(&mut net, &bulk, 12 * MIB);
    eprintln!(
        "16 x 12 MiB with a {} MiB budget per end: {} MiB resident at the peak, from {} MiB",
        budget >> 20,
        peak >> 20,
        before >> 20
    );
    assert!(
        peak < before + 4 * budget,
        "the budget held memory to {} MiB over {} MiB",
        (peak - before) >> 20,
        before >> 20
    );
}
