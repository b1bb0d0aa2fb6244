//! The smoltcp device of the stack: two packet queues, filled and drained
//! in batches by the caller, with their buffers recycled.

use std::collections::VecDeque;

use smoltcp::phy::{self, Checksum, ChecksumCapabilities, DeviceCapabilities, Medium};
use smoltcp::time::Instant;

/// Spare buffers kept per direction (the senders hand back theirs in
/// bursts, as a round trip's worth is acknowledged).
const SPARE: usize = 1024;
/// Room for the largest IP + TCP header (40 + 60 bytes), rounded up.
const HEADER_ROOM: usize = 128;

pub(crate) struct Queues {
    pub rx: VecDeque<Vec<u8>>,
    pub tx: VecDeque<Vec<u8>>,
    rx_spare: Vec<Vec<u8>>,
    tx_spare: Vec<Vec<u8>>,
    mtu: usize,
    /// Outbound packets held at most; when full, smoltcp keeps the data in
    /// its sockets until the caller drains (back-pressure, not loss).
    pub max_tx: usize,
}

impl Queues {
    pub fn new(mtu: usize, max_tx: usize) -> Self {
        Queues {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            rx_spare: Vec::new(),
            tx_spare: Vec::new(),
            mtu,
            max_tx,
        }
    }

    /// Queues a copy of an inbound packet.
    pub fn push_rx(&mut self, packet: &[u8]) {
        let buf = self.copy_rx(packet);
        self.rx.push_back(buf);
    }

    /// A copy of an inbound packet in a recycled buffer.
    pub fn copy_rx(&mut self, packet: &[u8]) -> Vec<u8> {
        let mut buf = self.rx_spare.pop().unwrap_or_default();
        buf.clear();
        buf.extend_from_slice(packet);
        buf
    }

    /// Queues an inbound packet for smoltcp.
    pub fn push_rx_owned(&mut self, packet: Vec<u8>) {
        self.rx.push_back(packet);
    }

    pub fn recycle_rx(&mut self, buf: Vec<u8>) {
        recycle(&mut self.rx_spare, buf);
    }

    /// A recycled buffer for an outbound packet we make ourselves.
    pub fn tx_buffer(&mut self) -> Vec<u8> {
        self.tx_spare.pop().unwrap_or_default()
    }

    pub fn recycle_tx(&mut self, buf: Vec<u8>) {
        recycle(&mut self.tx_spare, buf);
    }

    pub fn tx_full(&self) -> bool {
        self.tx.len() >= self.max_tx
    }
}

/// Keeps `buf` for reuse if there is room.
pub(crate) fn recycle(spare: &mut Vec<Vec<u8>>, buf: Vec<u8>) {
    if spare.len() < SPARE {
        spare.push(buf);
    }
}

pub(crate) struct RxToken<'a> {
    packet: Vec<u8>,
    spare: &'a mut Vec<Vec<u8>>,
}

pub(crate) struct TxToken<'a> {
    tx: &'a mut VecDeque<Vec<u8>>,
    spare: &'a mut Vec<Vec<u8>>,
}

impl phy::RxToken for RxToken<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let result = f(&self.packet);
        if self.spare.len() < SPARE {
            self.spare.push(self.packet);
        }
        result
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = self.spare.pop().unwrap_or_default();
        // A recycled buffer is zeroed only where the headers go: smoltcp
        // copies the whole payload over the rest.
        if buf.len() < len {
            buf.resize(len, 0);
        } else {
            buf.truncate(len);
        }
        let headers = len.min(HEADER_ROOM);
        buf[..headers].fill(0);
        let result = f(&mut buf);
        self.tx.push_back(buf);
        result
    }
}

impl phy::Device for Queues {
    type RxToken<'a> = RxToken<'a>;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken<'_>, TxToken<'_>)> {
        let packet = self.rx.pop_front()?;
        Some((
            RxToken {
                packet,
                spare: &mut self.rx_spare,
            },
            TxToken {
                tx: &mut self.tx,
                spare: &mut self.tx_spare,
            },
        ))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        if self.tx.len() >= self.max_tx {
            return None;
        }
        Some(TxToken {
            tx: &mut self.tx,
            spare: &mut self.tx_spare,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ip;
        caps.max_transmission_unit = self.mtu;
        // WireGuard authenticated every inbound packet end to end, so a
        // checksum cannot find anything the AEAD did not; outbound ones are
        // still computed for the kernels at the far end.
        let mut checksum = ChecksumCapabilities::default();
        checksum.ipv4 = Checksum::Tx;
        checksum.tcp = Checksum::Tx;
        checksum.udp = Checksum::Tx;
        checksum.icmpv4 = Checksum::Tx;
        checksum.icmpv6 = Checksum::Tx;
        caps.checksum = checksum;
        caps
    }
}
