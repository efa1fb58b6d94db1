//! Server reflection (v1 and v1alpha), one way for every port of every deployable.
//!
//! A port lists exactly the services it serves, plus health and both reflection services, and
//! every name it lists resolves: clients such as grpcui resolve each listed service at start-up
//! and stop at the first that fails. tonic-reflection registers only the descriptors of the
//! reflection version being built, so a v1alpha client asking about `grpc.reflection.v1` (or
//! the reverse) would get "Symbol not found"; both are registered here for both versions.

use tonic_reflection::server::v1::{ServerReflection as ServerReflectionV1, ServerReflectionServer};
use tonic_reflection::server::v1alpha::{
    ServerReflection as ServerReflectionV1Alpha, ServerReflectionServer as ServerReflectionServerV1Alpha,
};
use tonic_reflection::server::{Builder, Error};

/// The services every port lists besides its own.
pub const COMMON_SERVICES: [&str; 3] =
    ["grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

fn builder(services: &[&str]) -> Builder<'static> {
    let builder = Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(muster_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
    COMMON_SERVICES.iter().chain(services).fold(builder, |builder, name| builder.with_service_name(*name))
}

/// The v1 and v1alpha reflection services of a port serving `services` (fully qualified
/// names, e.g. `muster.v1.WorkerRegistrationService`).
#[allow(clippy::type_complexity)]
pub fn reflection_services(
    services: &[&str],
) -> Result<
    (
        ServerReflectionServer<impl ServerReflectionV1 + use<>>,
        ServerReflectionServerV1Alpha<impl ServerReflectionV1Alpha + use<>>,
    ),
    Error,
> {
    Ok((builder(services).build_v1()?, builder(services).build_v1alpha()?))
}
