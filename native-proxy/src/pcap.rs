//! `--pcap FILE`: the tunnel's inner IP packets, both directions, in the
//! classic pcap format (link type RAW), for Wireshark or tcpdump -r.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::SystemTime;

/// LINKTYPE_RAW: each record is an IPv4 or IPv6 packet.
const LINKTYPE_RAW: u32 = 101;
const SNAPLEN: u32 = 65535;

pub struct Pcap {
    out: BufWriter<File>,
    failed: bool,
}

impl Pcap {
    pub fn create(path: &Path) -> io::Result<Pcap> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes());
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes());
        header.extend_from_slice(&0u32.to_le_bytes());
        header.extend_from_slice(&SNAPLEN.to_le_bytes());
        header.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        out.write_all(&header)?;
        Ok(Pcap { out, failed: false })
    }

    /// Appends one packet; a write error is logged once and capture stops.
    pub fn write(&mut self, packet: &[u8]) {
        if self.failed {
            return;
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let len = packet.len().min(SNAPLEN as usize);
        let mut record = [0u8; 16];
        record[0..4].copy_from_slice(&(now.as_secs() as u32).to_le_bytes());
        record[4..8].copy_from_slice(&now.subsec_micros().to_le_bytes());
        record[8..12].copy_from_slice(&(len as u32).to_le_bytes());
        record[12..16].copy_from_slice(&(packet.len() as u32).to_le_bytes());
        let result = self
            .out
            .write_all(&record)
            .and_then(|()| self.out.write_all(&packet[..len]));
        if let Err(e) = result {
            tracing::error!(error = %e, "pcap write failed; capture stopped");
            self.failed = true;
        }
    }

    pub fn flush(&mut self) {
        if let Err(e) = self.out.flush() {
            tracing::error!(error = %e, "pcap flush failed");
        }
    }
}

impl Drop for Pcap {
    fn drop(&mut self) {
        self.flush();
    }
}

impl underpass_stack::PacketTap for Pcap {
    fn packet(&mut self, packet: &[u8]) {
        self.write(packet);
    }

    fn flush(&mut self) {
        Pcap::flush(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_a_header_and_records() {
        let path = std::env::temp_dir().join(format!("underpass-pcap-{}.pcap", std::process::id()));
        {
            let mut p = Pcap::create(&path).unwrap();
            p.write(&[0x45; 28]);
            p.write(&[0x60; 48]);
        }
        let bytes = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert_eq!(bytes.len(), 24 + 16 + 28 + 16 + 48);
        assert_eq!(&bytes[..4], &0xa1b2_c3d4u32.to_le_bytes());
        assert_eq!(
            u32::from_le_bytes(bytes[20..24].try_into().unwrap()),
            LINKTYPE_RAW
        );
        assert_eq!(u32::from_le_bytes(bytes[32..36].try_into().unwrap()), 28);
    }
}
