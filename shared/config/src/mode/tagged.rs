//! Deserialization of [`ClusterMode`] from its internally tagged form (`mode = "raft"` beside
//! the variant's fields).
//!
//! serde's derived internally tagged deserializer buffers the whole table before it looks at
//! the tag, and errors raised while reading the buffer lose their position: a typo in a peer
//! would be reported at `cluster` instead of `cluster.peers[1].raft_adr`. Here the tag is read
//! first and the remaining keys are streamed straight into a derived visitor, so every error
//! keeps its full path. [`crate::ConfigLoader`] puts `mode` first in every table; for other
//! sources (JSON with sorted keys, say) the table is buffered and reordered, as serde would.
//!
//! The field list is written twice, here and on [`ClusterMode`], but `remote = "ClusterMode"`
//! makes the compiler check that both agree in names and types.

use std::collections::HashMap;
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, VariantAccess, Visitor};
use serde::{Deserialize, forward_to_deserialize_any};

use super::{ClusterMode, RaftPeer, StaticPeer, WorkerTierRole, defaults};

/// The key that names the variant.
pub(crate) const TAG: &str = "mode";

impl<'de> Deserialize<'de> for ClusterMode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(TaggedVisitor)
    }
}

/// Externally tagged mirror of [`ClusterMode`] that carries the serde defaults. It is fed by
/// [`TagFirst`], which presents "the `mode` value, then the other keys" as an enum.
#[derive(Deserialize)]
#[serde(remote = "ClusterMode", rename_all = "kebab-case", deny_unknown_fields)]
enum Fields {
    SingleNode,
    Raft {
        node_id: u64,
        peers: Vec<RaftPeer>,
    },
    Static {
        node_id: u64,
        peers: Vec<StaticPeer>,
        #[serde(default = "defaults::static_heartbeat_interval", with = "humantime_serde")]
        heartbeat_interval: Duration,
        #[serde(default = "defaults::static_failure_threshold", with = "humantime_serde")]
        failure_threshold: Duration,
        #[serde(default = "defaults::static_require_majority")]
        require_majority: bool,
    },
    WorkerTier {
        role: WorkerTierRole,
        node_id: Option<u64>,
        #[serde(default)]
        peers: Vec<RaftPeer>,
        #[serde(default = "defaults::worker_grpc_addr")]
        worker_grpc_addr: SocketAddr,
        #[serde(default)]
        servers: Vec<String>,
        token_file: Option<String>,
        identity_dir: Option<String>,
        worker_ca_dir: Option<String>,
        #[serde(default = "defaults::heartbeat_min_ttl", with = "humantime_serde")]
        heartbeat_min_ttl: Duration,
        #[serde(default = "defaults::heartbeat_max_ttl", with = "humantime_serde")]
        heartbeat_max_ttl: Duration,
        #[serde(default = "defaults::heartbeat_grace", with = "humantime_serde")]
        heartbeat_grace: Duration,
        #[serde(default = "defaults::max_heartbeats_per_second")]
        max_heartbeats_per_second: u32,
        #[serde(default = "defaults::failover_heartbeat_ttl", with = "humantime_serde")]
        failover_heartbeat_ttl: Duration,
        #[serde(default)]
        labels: HashMap<String, String>,
    },
}

struct TaggedVisitor;

impl<'de> Visitor<'de> for TaggedVisitor {
    type Value = ClusterMode;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a table with a `{TAG}` key")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ClusterMode, A::Error> {
        match map.next_key::<String>()? {
            None => Err(de::Error::missing_field(TAG)),
            Some(key) if key == TAG => Fields::deserialize(TagFirst(map)),
            Some(key) => reorder(key, map),
        }
    }
}

/// Slow path for sources that do not put `mode` first: buffer the table, then stream it again
/// with `mode` in front. Errors lose the part of their path below the table.
fn reorder<'de, A: MapAccess<'de>>(first: String, mut map: A) -> Result<ClusterMode, A::Error> {
    let mut tag = None;
    let mut rest = Vec::new();
    let mut next = Some(first);
    while let Some(key) = next {
        let value: serde_json::Value = map.next_value()?;
        if key == TAG {
            tag = Some(value);
        } else {
            rest.push((key, value));
        }
        next = map.next_key()?;
    }
    let tag = tag.ok_or_else(|| de::Error::missing_field(TAG))?;
    let entries = std::iter::once((TAG.to_owned(), tag)).chain(rest);
    de::value::MapDeserializer::<_, serde_json::Error>::new(entries)
        .deserialize_map(TaggedVisitor)
        .map_err(de::Error::custom)
}

/// A map whose `mode` key has just been read, seen as an enum: the `mode` value is the variant,
/// the remaining entries are the variant's fields.
struct TagFirst<A>(A);

impl<'de, A: MapAccess<'de>> Deserializer<'de> for TagFirst<A> {
    type Error = A::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, A::Error> {
        visitor.visit_enum(self)
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map struct enum
        identifier ignored_any
    }
}

impl<'de, A: MapAccess<'de>> EnumAccess<'de> for TagFirst<A> {
    type Error = A::Error;
    type Variant = Self;

    fn variant_seed<S: DeserializeSeed<'de>>(mut self, seed: S) -> Result<(S::Value, Self), A::Error> {
        let variant = self.0.next_value_seed(seed)?;
        Ok((variant, self))
    }
}

impl<'de, A: MapAccess<'de>> VariantAccess<'de> for TagFirst<A> {
    type Error = A::Error;

    fn unit_variant(mut self) -> Result<(), A::Error> {
        match self.0.next_key_seed(NoMoreKeys)? {
            None => Ok(()),
            Some(never) => match never {},
        }
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        visitor.visit_map(self.0)
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, _seed: T) -> Result<T::Value, A::Error> {
        Err(de::Error::custom("ClusterMode has no newtype variants"))
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, _visitor: V) -> Result<V::Value, A::Error> {
        Err(de::Error::custom("ClusterMode has no tuple variants"))
    }
}

/// Key seed for a variant without fields: any key is an unknown field.
struct NoMoreKeys;

impl<'de> DeserializeSeed<'de> for NoMoreKeys {
    type Value = Infallible;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Infallible, D::Error> {
        deserializer.deserialize_identifier(self)
    }
}

impl<'de> Visitor<'de> for NoMoreKeys {
    type Value = Infallible;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no further keys")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Infallible, E> {
        Err(E::custom(format_args!("unknown field `{key}`, mode `single-node` has no other fields")))
    }
}
