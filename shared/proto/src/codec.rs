//! The codec every generated client and server uses: tonic's prost codec with small per-call
//! buffers.
//!
//! tonic gives every call an encode and a decode buffer of 8 KiB up front, and keeps them as
//! long as the call lives. Most calls are short, but a gateway holds one long-lived stream per
//! worker whose reports and acks are a few dozen bytes: at 100,000 workers those two buffers
//! alone were 1.6 GiB, a third of the gateway's memory. Buffers of [`BUFFER_BYTES`] grow on
//! demand (by their own size) for the rare large message, such as a listing page or a
//! snapshot chunk, so only the memory changes, not what can be sent.

use std::marker::PhantomData;

use tonic::codec::{BufferSettings, Codec};
use tonic_prost::ProstCodec;

/// Each call's encode and decode buffer to start with.
pub const BUFFER_BYTES: usize = 1024;
/// tonic's default: how much a stream batches into one write when messages are ready.
const YIELD_THRESHOLD: usize = 32 * 1024;

fn settings() -> BufferSettings {
    BufferSettings::new(BUFFER_BYTES, YIELD_THRESHOLD)
}

/// [`ProstCodec`] with [`BUFFER_BYTES`] buffers (named by `codec_path` in `build.rs`).
#[derive(Debug)]
pub struct LeanCodec<T, U>(PhantomData<fn(T) -> U>);

impl<T, U> Default for LeanCodec<T, U> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<T, U> Codec for LeanCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = <ProstCodec<T, U> as Codec>::Encoder;
    type Decoder = <ProstCodec<T, U> as Codec>::Decoder;

    fn encoder(&mut self) -> Self::Encoder {
        ProstCodec::<T, U>::raw_encoder(settings())
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProstCodec::<T, U>::raw_decoder(settings())
    }
}

#[cfg(test)]
mod tests {
    use tonic::codec::{Decoder, Encoder};

    use super::*;
    use crate::v1;

    #[test]
    fn calls_start_with_small_buffers() {
        let mut codec = LeanCodec::<v1::StatusAck, v1::StatusReport>::default();
        // The sizes are private to tonic; its Debug output names them.
        let expected = format!("buffer_size: {BUFFER_BYTES},");
        assert!(format!("{:?}", codec.encoder().buffer_settings()).contains(&expected));
        assert!(format!("{:?}", codec.decoder().buffer_settings()).contains(&expected));
    }
}
