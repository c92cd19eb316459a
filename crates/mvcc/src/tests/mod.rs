//! Store-level tests: each opens a real backend file in a temp dir.

mod basic;
mod compact;
mod leases;
mod model;
mod parked;
mod range_opts;
mod txn;

use std::path::PathBuf;
use std::sync::Arc;

use etcd_proto::etcdserverpb::{DeleteRangeRequest, PutRequest, RangeRequest};
use etcd_proto::mvccpb::KeyValue;
use etcd_storage::Backend;

use crate::KvStore;

pub(crate) struct Env {
    pub dir: tempfile::TempDir,
    pub backend: Arc<Backend>,
    pub store: KvStore,
}

pub(crate) fn path_of(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("db")
}

pub(crate) fn open() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let backend = Arc::new(Backend::open(&path_of(&dir)).unwrap());
    let store = KvStore::open(backend.clone()).unwrap();
    Env { dir, backend, store }
}

impl Env {
    pub fn reopen(self) -> Env {
        let Env { dir, backend, store } = self;
        backend.flush().unwrap(); // a clean stop: parked writes committed
        drop(store);
        drop(backend);
        let backend = Arc::new(Backend::open(&path_of(&dir)).unwrap());
        let store = KvStore::open(backend.clone()).unwrap();
        Env { dir, backend, store }
    }

    /// Puts in its own batch; returns the revision after the put.
    pub fn put(&self, k: &str, v: &str) -> i64 {
        self.put_req(PutRequest { key: k.into(), value: v.into(), ..Default::default() })
    }

    pub fn put_req(&self, req: PutRequest) -> i64 {
        let mut b = self.store.begin_batch(&self.backend).unwrap();
        b.put(&req, &|_| true).unwrap();
        let rev = b.revision();
        b.commit(false).unwrap();
        rev
    }

    pub fn del(&self, k: &str, end: &str) -> (i64, i64) {
        let mut b = self.store.begin_batch(&self.backend).unwrap();
        let r = b
            .delete_range(&DeleteRangeRequest {
                key: k.into(),
                range_end: end.into(),
                prev_kv: false,
            })
            .unwrap();
        let rev = b.revision();
        b.commit(false).unwrap();
        (r.deleted, rev)
    }

    pub fn get(&self, k: &str) -> Option<KeyValue> {
        self.store.range(&rr(k, "")).unwrap().kvs.pop()
    }

    pub fn get_at(&self, k: &str, rev: i64) -> Option<KeyValue> {
        let mut r = rr(k, "");
        r.revision = rev;
        self.store.range(&r).unwrap().kvs.pop()
    }
}

pub(crate) fn rr(k: &str, end: &str) -> RangeRequest {
    RangeRequest { key: k.into(), range_end: end.into(), ..Default::default() }
}

pub(crate) fn keys(kvs: &[KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| String::from_utf8(kv.key.clone()).unwrap()).collect()
}

pub(crate) fn kv(k: &str, v: &str, create: i64, modr: i64, ver: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: v.into(),
        create_revision: create,
        mod_revision: modr,
        version: ver,
        lease: 0,
    }
}
