//! Generates the etcd API types and gRPC stubs from the vendored `.proto` files.
//! `protox` parses the protos in-process, so no `protoc` binary is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/mvccpb/kv.proto",
        "proto/authpb/auth.proto",
        "proto/leasepb/lease.proto",
        "proto/etcdserverpb/rpc.proto",
        "proto/v3lockpb/v3lock.proto",
        "proto/v3electionpb/v3election.proto",
        "proto/etcdrs/internal.proto",
        "proto/etcdrs/raft.proto",
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    // The JSON gateway's encoding (grpc-gateway's, as etcd serves it): proto field
    // names, 64-bit integers as strings, bytes as base64, enums by name.
    pbjson_build::Builder::new()
        .register_descriptors(&prost::Message::encode_to_vec(&fds))?
        .preserve_proto_field_names()
        .build(&[".etcdserverpb", ".mvccpb", ".authpb", ".v3lockpb", ".v3electionpb"])?;
    tonic_prost_build::configure().generate_default_stubs(true).compile_fds(fds)?;
    Ok(())
}
