//! What the fuzz targets share: reading a structured input out of libFuzzer's bytes, and the
//! writer the seed generator (`examples/make_seeds.rs`) uses to build inputs in the same shape.
//!
//! Structured inputs are a few fixed-width integers and length-prefixed frames
//! (`[len: u16 LE][bytes]`), so a mutated input still splits into the parts a target expects
//! and seeds can be written without a serialisation library.

/// A cursor over a fuzz input. Running out is not an error: missing integers read as zero,
/// a missing frame as `None`, a frame longer than what is left as what is left.
#[derive(Debug)]
pub struct Input<'a> {
    rest: &'a [u8],
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Self { rest: data }
    }

    pub fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    pub fn u8(&mut self) -> u8 {
        self.take(1).first().copied().unwrap_or(0)
    }

    /// Up to `N` bytes, little-endian.
    fn le<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let bytes = self.take(N);
        out[..bytes.len()].copy_from_slice(bytes);
        out
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.le())
    }

    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.le())
    }

    /// The next length-prefixed frame.
    pub fn frame(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let len = u16::from_le_bytes(self.le()) as usize;
        Some(self.take(len))
    }

    /// Everything left.
    pub fn rest(&mut self) -> &'a [u8] {
        self.take(self.rest.len())
    }

    fn take(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.rest.split_at(n.min(self.rest.len()));
        self.rest = tail;
        head
    }
}

/// Builds inputs that [`Input`] reads back.
#[derive(Debug, Default)]
pub struct Output(pub Vec<u8>);

impl Output {
    pub fn u8(mut self, value: u8) -> Self {
        self.0.push(value);
        self
    }

    pub fn u32(mut self, value: u32) -> Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    pub fn u64(mut self, value: u64) -> Self {
        self.0.extend_from_slice(&value.to_le_bytes());
        self
    }

    /// A frame; panics past 64 KiB (seeds are small).
    pub fn frame(mut self, bytes: &[u8]) -> Self {
        let len = u16::try_from(bytes.len()).expect("a seed frame fits in 64 KiB");
        self.0.extend_from_slice(&len.to_le_bytes());
        self.0.extend_from_slice(bytes);
        self
    }

    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
}

/// A scratch directory on tmpfs when there is one: targets that write files (the WAL,
/// snapshots) then run at memory speed, fsyncs included.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    let builder = tempfile::Builder::new().prefix("muster-fuzz-").tempdir_in(shm);
    builder.or_else(|_| tempfile::tempdir()).expect("a scratch directory")
}

/// Which config a `config_parse` input is, by its first byte (low two bits).
pub const CONFIG_KINDS: [&str; 4] = ["control-plane", "registrar", "heartbeat-gateway", "worker-agent"];
/// Set in a `config_parse` input's first byte: the text is `NAME=VALUE` lines read as the
/// environment instead of a TOML file.
pub const CONFIG_AS_ENV: u8 = 0x80;

/// `csr_sign` input modes (first byte, modulo 2): the rest is PEM text, or DER to wrap in PEM.
pub const CSR_PEM: u8 = 0;
pub const CSR_DER: u8 = 1;

/// The message types `proto_decode` decodes, selected by the input's first byte.
pub const PROTO_KINDS: usize = 12;
