//! etcd's v3 API as Rust types and tonic services, generated at build time from
//! the `.proto` files under `proto/` (etcd 3.4's definitions plus the fields and
//! RPCs etcd 3.5 added). Package names, message names and field numbers are
//! etcd's, so every etcd client interoperates. This crate holds no logic.
#![allow(missing_docs, clippy::all)]

pub mod mvccpb {
    tonic::include_proto!("mvccpb");
    include!(concat!(env!("OUT_DIR"), "/mvccpb.serde.rs"));
}
pub mod authpb {
    tonic::include_proto!("authpb");
    include!(concat!(env!("OUT_DIR"), "/authpb.serde.rs"));
}
/// The `lease` bucket's values in etcd's backend file.
pub mod leasepb {
    tonic::include_proto!("leasepb");
}
pub mod etcdserverpb {
    tonic::include_proto!("etcdserverpb");
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.serde.rs"));
}
pub mod v3lockpb {
    tonic::include_proto!("v3lockpb");
    include!(concat!(env!("OUT_DIR"), "/v3lockpb.serde.rs"));
}
pub mod v3electionpb {
    tonic::include_proto!("v3electionpb");
    include!(concat!(env!("OUT_DIR"), "/v3electionpb.serde.rs"));
}
/// Messages private to this implementation (Raft payloads, stored members).
pub mod etcdrs {
    tonic::include_proto!("etcdrs");
}

pub use prost::Message;
