//! Known content for transfers: bytes made from a seed, checked by a
//! running checksum, so gigabytes can be checked without being stored.

use super::*;

/// A 64-bit checksum of a byte stream, fed in pieces.
#[derive(Default)]
pub struct Checksum(std::hash::DefaultHasher);

impl Checksum {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.write(bytes);
    }

    pub fn value(&self) -> u64 {
        self.0.finish()
    }

    pub fn of(bytes: &[u8]) -> u64 {
        let mut c = Checksum::default();
        c.update(bytes);
        c.value()
    }

    pub fn of_file(path: &Path) -> (u64, u64) {
        let mut f = std::fs::File::open(path).unwrap();
        let mut c = Checksum::default();
        let mut buf = vec![0u8; 1 << 20];
        let mut len = 0;
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                return (c.value(), len);
            }
            len += n as u64;
            c.update(&buf[..n]);
        }
    }
}

/// Deterministic content: byte `i` of stream `seed`.
pub fn content(seed: u64, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    fill(seed, 0, &mut out);
    out
}

/// Fills `buf` with the content of stream `seed` starting at `offset`.
pub fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let x = (offset + i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ seed;
        *b = (x >> 29) as u8;
    }
}

/// Writes `len` bytes of stream `seed` to a file; returns its checksum.
pub fn write_content(path: &Path, seed: u64, len: u64) -> u64 {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let value = stream_content(seed, len, |chunk| f.write_all(chunk).unwrap());
    f.flush().unwrap();
    value
}

/// The checksum of `len` bytes of stream `seed`, without keeping them.
pub fn content_checksum(seed: u64, len: u64) -> u64 {
    stream_content(seed, len, |_| {})
}

/// Hands `len` bytes of stream `seed` to `sink` a MiB at a time; returns
/// their checksum.
pub fn stream_content(seed: u64, len: u64, mut sink: impl FnMut(&[u8])) -> u64 {
    let mut c = Checksum::default();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < len {
        let n = (len - off).min(buf.len() as u64) as usize;
        fill(seed, off, &mut buf[..n]);
        c.update(&buf[..n]);
        sink(&buf[..n]);
        off += n as u64;
    }
    c.value()
}
