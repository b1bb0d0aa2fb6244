//! ICMP echo ("ping") through the tunnel: the stack answers echo requests
//! to its own addresses, and sends its own to check that a path through
//! the tunnel works (wireproxy's `CheckAlive`), noting when each target
//! last answered.
//!
//! smoltcp's automatic echo replies stay off: a gateway's interface
//! accepts packets to every address, and must not answer for hosts it
//! only forwards to.

use std::net::IpAddr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    Icmpv4Packet, Icmpv4Repr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv4Packet, Ipv4Repr,
    Ipv6Packet, Ipv6Repr,
};
use underpass_core::Instant;

use crate::stack::{AddrMap, Stack};

/// Targets pinged at once: a config names a handful.
pub const MAX_ECHO_TARGETS: usize = 64;
/// What our echo requests carry, so their replies are recognised.
const PAYLOAD: &[u8] = b"underpass echo\0\0";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
/// Why a ping was not sent.
#[allow(missing_docs)] // each variant's #[error] message says what it is
pub enum EchoError {
    #[error("the tunnel has no address of the target's family")]
    NoSourceAddress,
    #[error("at most {MAX_ECHO_TARGETS} targets can be pinged")]
    TooManyTargets,
    #[error("the outbound queue is full")]
    QueueFull,
}

/// Our pings: the identifier they carry, and per target the last sequence
/// number sent and when it last answered.
pub(crate) struct Pinger {
    ident: u16,
    targets: AddrMap<IpAddr, Target>,
    /// Replies recognised so far: a cheap "anything new?" for callers.
    replies: u64,
}

#[derive(Default, Clone, Copy)]
struct Target {
    seq: u16,
    answered: Option<Instant>,
}

impl Pinger {
    pub(crate) fn new(seed: u64, hasher: foldhash::fast::FixedState) -> Pinger {
        Pinger {
            ident: seed as u16,
            targets: AddrMap::with_hasher(hasher),
            replies: 0,
        }
    }
}

/// An echo message as parsed: addresses, request or reply, identifier,
/// sequence number and data.
struct Echo<'a> {
    src: IpAddr,
    dst: IpAddr,
    request: bool,
    ident: u16,
    seq: u16,
    data: &'a [u8],
}

fn checksums() -> ChecksumCapabilities {
    ChecksumCapabilities::default()
}

fn parse(packet: &[u8]) -> Option<Echo<'_>> {
    // Most packets are not ICMP: a look at the protocol byte settles it.
    let icmp = match packet.first()? >> 4 {
        4 => packet.get(9) == Some(&1),
        6 => packet.get(6) == Some(&58),
        _ => false,
    };
    if !icmp {
        return None;
    }
    match packet[0] >> 4 {
        4 => {
            let ip = Ipv4Packet::new_checked(packet).ok()?;
            let repr = Ipv4Repr::parse(&ip, &checksums()).ok()?;
            if repr.next_header != IpProtocol::Icmp || ip.more_frags() || ip.frag_offset() != 0 {
                return None;
            }
            let icmp =
                Icmpv4Packet::new_checked(&packet[ip.header_len() as usize..][..repr.payload_len])
                    .ok()?;
            let (request, ident, seq_no, data) =
                match Icmpv4Repr::parse(&icmp, &checksums()).ok()? {
                    Icmpv4Repr::EchoRequest {
                        ident,
                        seq_no,
                        data,
                    } => (true, ident, seq_no, data),
                    Icmpv4Repr::EchoReply {
                        ident,
                        seq_no,
                        data,
                    } => (false, ident, seq_no, data),
                    _ => return None,
                };
            Some(Echo {
                src: repr.src_addr.into(),
                dst: repr.dst_addr.into(),
                request,
                ident,
                seq: seq_no,
                data,
            })
        }
        6 => {
            let ip = Ipv6Packet::new_checked(packet).ok()?;
            let repr = Ipv6Repr::parse(&ip).ok()?;
            if repr.next_header != IpProtocol::Icmpv6 {
                return None;
            }
            let icmp = Icmpv6Packet::new_checked(&packet[40..][..repr.payload_len]).ok()?;
            let parsed =
                Icmpv6Repr::parse(&repr.src_addr, &repr.dst_addr, &icmp, &checksums()).ok()?;
            let (request, ident, seq_no, data) = match parsed {
                Icmpv6Repr::EchoRequest {
                    ident,
                    seq_no,
                    data,
                } => (true, ident, seq_no, data),
                Icmpv6Repr::EchoReply {
                    ident,
                    seq_no,
                    data,
                } => (false, ident, seq_no, data),
                _ => return None,
            };
            Some(Echo {
                src: repr.src_addr.into(),
                dst: repr.dst_addr.into(),
                request,
                ident,
                seq: seq_no,
                data,
            })
        }
        _ => None,
    }
}

/// Writes an echo request or reply from `src` to `dst` into `buf`.
fn emit(
    buf: &mut Vec<u8>,
    src: IpAddr,
    dst: IpAddr,
    request: bool,
    ident: u16,
    seq: u16,
    data: &[u8],
) -> Option<()> {
    match (src, dst) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let icmp = if request {
                Icmpv4Repr::EchoRequest {
                    ident,
                    seq_no: seq,
                    data,
                }
            } else {
                Icmpv4Repr::EchoReply {
                    ident,
                    seq_no: seq,
                    data,
                }
            };
            let ip = Ipv4Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: IpProtocol::Icmp,
                payload_len: icmp.buffer_len(),
                hop_limit: 64,
            };
            buf.clear();
            buf.resize(ip.buffer_len() + icmp.buffer_len(), 0);
            let mut packet = Ipv4Packet::new_unchecked(&mut buf[..]);
            ip.emit(&mut packet, &checksums());
            icmp.emit(
                &mut Icmpv4Packet::new_unchecked(packet.payload_mut()),
                &checksums(),
            );
            Some(())
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let icmp = if request {
                Icmpv6Repr::EchoRequest {
                    ident,
                    seq_no: seq,
                    data,
                }
            } else {
                Icmpv6Repr::EchoReply {
                    ident,
                    seq_no: seq,
                    data,
                }
            };
            let ip = Ipv6Repr {
                src_addr: src,
                dst_addr: dst,
                next_header: IpProtocol::Icmpv6,
                payload_len: icmp.buffer_len(),
                hop_limit: 64,
            };
            buf.clear();
            buf.resize(ip.buffer_len() + icmp.buffer_len(), 0);
            let mut packet = Ipv6Packet::new_unchecked(&mut buf[..]);
            ip.emit(&mut packet);
            let mut body = Icmpv6Packet::new_unchecked(packet.payload_mut());
            icmp.emit(&src, &dst, &mut body, &checksums());
            Some(())
        }
        _ => None,
    }
}

impl Stack {
    /// Sends an ICMP echo request to `dst` from the tunnel address of its
    /// family (with the next [`Stack::drain_outbound`]); when it answers,
    /// [`Stack::echo_answered`] says when.
    pub fn ping(&mut self, dst: IpAddr) -> Result<(), EchoError> {
        let src = self.local_ip_for(dst).ok_or(EchoError::NoSourceAddress)?;
        if self.device.tx_full() {
            return Err(EchoError::QueueFull);
        }
        let pinger = &mut self.pinger;
        if !pinger.targets.contains_key(&dst) && pinger.targets.len() >= MAX_ECHO_TARGETS {
            return Err(EchoError::TooManyTargets);
        }
        let target = pinger.targets.entry(dst).or_default();
        target.seq = target.seq.wrapping_add(1);
        let (ident, seq) = (pinger.ident, target.seq);
        let mut buf = self.device.tx_buffer();
        emit(&mut buf, src, dst, true, ident, seq, PAYLOAD).ok_or(EchoError::NoSourceAddress)?;
        self.device.tx.push_back(buf);
        Ok(())
    }

    /// When `dst` last answered one of our echo requests.
    pub fn echo_answered(&self, dst: IpAddr) -> Option<Instant> {
        self.pinger.targets.get(&dst)?.answered
    }

    /// How many echo replies were recognised so far (it changes when
    /// [`Stack::echo_answered`] may have).
    pub fn echo_replies(&self) -> u64 {
        self.pinger.replies
    }

    /// An ICMP echo packet for us: a request to one of our addresses gets
    /// its reply queued, a reply to one of our pings is noted. False for
    /// anything else, which goes on to smoltcp.
    pub(crate) fn echo_receive(&mut self, now: Instant, packet: &[u8]) -> bool {
        let Some(echo) = parse(packet) else {
            return false;
        };
        let ours = self.options.addresses.iter().any(|n| n.addr() == echo.dst);
        if !ours {
            return false;
        }
        if echo.request {
            // A full queue drops the reply, as a busy host would.
            if !self.device.tx_full() {
                let mut buf = self.device.tx_buffer();
                if emit(
                    &mut buf, echo.dst, echo.src, false, echo.ident, echo.seq, echo.data,
                )
                .is_some()
                {
                    self.device.tx.push_back(buf);
                }
            }
            return true;
        }
        let pinger = &mut self.pinger;
        if let Some(target) = pinger.targets.get_mut(&echo.src) {
            // The last request, or the one before it (a reply slower than
            // the interval still counts).
            let recent = echo.seq == target.seq || echo.seq == target.seq.wrapping_sub(1);
            if echo.ident == pinger.ident && recent && echo.data == PAYLOAD {
                target.answered = Some(now);
                pinger.replies += 1;
            }
        }
        true
    }
}
