//! Frames: `magic u32 | version u8 | reserved 3 bytes | payload_len u32 | crc32c u32 | payload`.

use crate::message::Envelope;
use borealis_core::ErrorKind;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// `"BRLW"` read as a little-endian u32.
pub const FRAME_MAGIC: u32 = u32::from_le_bytes(*b"BRLW");
/// 3: every connection to a storage node starts with `Auth` (docs/security.md).
/// 4: `Fence`, `Ack.epoch`, `State.promised_epoch` (RFC 0014 §2).
pub const FRAME_VERSION: u8 = 4;
pub const FRAME_HEADER_BYTES: usize = 16;
/// No frame may be larger: bounds the memory one connection can make a peer allocate. Appends and
/// log reads are batched well below it (see `LOG_READ_BYTES_MAX`).
pub const FRAME_BYTES_MAX: usize = 8 * 1024 * 1024;

#[derive(Debug, Error)]
pub enum WireError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame magic {0:#010x}")]
    BadMagic(u32),
    #[error("unsupported frame version {0}")]
    BadVersion(u8),
    #[error("frame header has non-zero reserved bytes")]
    Reserved,
    #[error("frame of {0} bytes exceeds the limit of {FRAME_BYTES_MAX}")]
    TooLarge(usize),
    #[error("frame CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    BadCrc { stored: u32, computed: u32 },
    #[error("undecodable frame payload: {0}")]
    Decode(String),
    #[error("connection closed")]
    Closed,
    #[error("peer answered with an error ({kind:?}): {message}")]
    Remote { kind: ErrorKind, message: String },
    #[error("unexpected answer: {0}")]
    Unexpected(String),
    #[error("no answer within {0} ms")]
    Timeout(u64),
}

impl WireError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            WireError::Remote { kind, .. } => *kind,
            WireError::Timeout(_) => ErrorKind::Unavailable,
            WireError::BadMagic(_)
            | WireError::BadVersion(_)
            | WireError::Reserved
            | WireError::BadCrc { .. }
            | WireError::Decode(_) => ErrorKind::Corrupt,
            _ => ErrorKind::Unavailable,
        }
    }
}

/// Encodes `env` as one frame.
pub fn encode_frame(env: &Envelope) -> Result<Vec<u8>, WireError> {
    let payload = postcard::to_allocvec(env).map_err(|e| WireError::Decode(e.to_string()))?;
    if payload.len() > FRAME_BYTES_MAX {
        return Err(WireError::TooLarge(payload.len()));
    }
    let mut out = Vec::with_capacity(FRAME_HEADER_BYTES + payload.len());
    out.extend_from_slice(&FRAME_MAGIC.to_le_bytes());
    out.extend_from_slice(&[FRAME_VERSION, 0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(&payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Checks a frame header; returns the payload length and its CRC.
pub fn decode_header(h: &[u8; FRAME_HEADER_BYTES]) -> Result<(usize, u32), WireError> {
    let magic = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
    if magic != FRAME_MAGIC {
        return Err(WireError::BadMagic(magic));
    }
    if h[4] != FRAME_VERSION {
        return Err(WireError::BadVersion(h[4]));
    }
    if h[5..8] != [0, 0, 0] {
        return Err(WireError::Reserved);
    }
    let len = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
    if len > FRAME_BYTES_MAX {
        return Err(WireError::TooLarge(len));
    }
    Ok((len, u32::from_le_bytes([h[12], h[13], h[14], h[15]])))
}

/// Decodes a payload whose CRC is `stored`.
pub fn decode_payload(payload: &[u8], stored: u32) -> Result<Envelope, WireError> {
    let computed = crc32c::crc32c(payload);
    if computed != stored {
        return Err(WireError::BadCrc { stored, computed });
    }
    postcard::from_bytes(payload).map_err(|e| WireError::Decode(e.to_string()))
}

/// Reads one frame. `Ok(None)` on a clean end of stream between frames.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Option<Envelope>, WireError> {
    let mut header = [0u8; FRAME_HEADER_BYTES];
    match r.read_exact(&mut header).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let (len, crc) = decode_header(&header)?;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await?;
    decode_payload(&payload, crc).map(Some)
}

/// Writes one frame (without flushing a buffered writer).
pub async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    env: &Envelope,
) -> Result<(), WireError> {
    let bytes = encode_frame(env)?;
    w.write_all(&bytes).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Body;
    use borealis_core::{Lsn, TenantId};

    fn env() -> Envelope {
        Envelope {
            request_id: 7,
            body: Body::Hello {
                tenant: TenantId(1),
                epoch: 3,
                epoch_start_lsn: Lsn(10),
                history: vec![borealis_core::EpochStart {
                    epoch: 3,
                    start: Lsn(10),
                }],
            },
        }
    }

    #[test]
    fn frame_round_trip() {
        let bytes = encode_frame(&env()).unwrap();
        let mut h = [0u8; FRAME_HEADER_BYTES];
        h.copy_from_slice(&bytes[..FRAME_HEADER_BYTES]);
        let (len, crc) = decode_header(&h).unwrap();
        assert_eq!(len, bytes.len() - FRAME_HEADER_BYTES);
        assert_eq!(
            decode_payload(&bytes[FRAME_HEADER_BYTES..], crc).unwrap(),
            env()
        );
    }

    /// Pins the frame encoding of one message.
    #[test]
    fn frame_snapshot() {
        let hex: String = encode_frame(&env())
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, "42524c570400000008000000db3e1562070001030a01030a");
    }

    #[test]
    fn corruption_is_detected() {
        let bytes = encode_frame(&env()).unwrap();
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x10;
            let mut h = [0u8; FRAME_HEADER_BYTES];
            h.copy_from_slice(&b[..FRAME_HEADER_BYTES]);
            let ok = decode_header(&h).and_then(|(len, crc)| {
                if len != b.len() - FRAME_HEADER_BYTES {
                    return Err(WireError::Decode("length".into()));
                }
                decode_payload(&b[FRAME_HEADER_BYTES..], crc)
            });
            assert!(ok.is_err(), "flip at byte {i} went unnoticed");
        }
    }

    #[tokio::test]
    async fn oversized_header_is_refused_before_allocating() {
        let mut h = encode_frame(&env()).unwrap();
        h[8..12].copy_from_slice(&(u32::MAX).to_le_bytes());
        let mut r = &h[..];
        assert!(matches!(
            read_frame(&mut r).await,
            Err(WireError::TooLarge(_))
        ));
    }

    #[tokio::test]
    async fn clean_eof_is_none_and_torn_frame_is_an_error() {
        let mut empty: &[u8] = &[];
        assert!(read_frame(&mut empty).await.unwrap().is_none());
        let bytes = encode_frame(&env()).unwrap();
        let mut torn = &bytes[..bytes.len() - 1];
        assert!(read_frame(&mut torn).await.is_err());
    }
}
