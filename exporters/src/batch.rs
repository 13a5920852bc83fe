//! Batching: records are added to an open batch, which is sealed (encoded into a request body) when full or old
//! enough. Every record in a batch holds one unit of work on its offset until the batch is settled.

use std::time::Instant;

use bytes::Bytes;

use crate::delivery::{Delivery, Tenant};

/// A record waiting on its batch: the unit of work it holds, under its partition's ownership epoch.
#[derive(Debug)]
pub(crate) struct Held {
    pub partition: i32,
    pub epoch: u64,
    pub offset: i64,
}

/// A record's bytes, kept until its batch is accepted in case they must go to the dead-letter topic.
#[derive(Debug)]
pub(crate) struct Raw {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// Its `tailgate.tenant`.
    pub tenant: Tenant,
}

/// A batch records are being added to: of one tenant, as every request to a backend is.
pub(crate) struct Open<I> {
    pub tenant: Tenant,
    pub items: I,
    /// Items the backend will get.
    pub count: u64,
    /// Record bytes added.
    pub bytes: usize,
    /// What the records became after translation, in request bytes (see `Batch::bytes`).
    pub translated: usize,
    pub held: Vec<Held>,
    pub raw: Vec<Raw>,
    opened: Instant,
}

impl<I: Default> Open<I> {
    pub fn new(tenant: Tenant) -> Self {
        Open {
            tenant,
            items: I::default(),
            count: 0,
            bytes: 0,
            translated: 0,
            held: Vec::new(),
            raw: Vec::new(),
            opened: Instant::now(),
        }
    }
}

impl<I> Open<I> {
    pub fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Full when it holds `max_items` items, or `max_bytes` of records or of their translation: a record can become
    /// many times its size (a histogram's every bucket a series with all its labels), and the request is what is
    /// held in memory and sent.
    pub fn is_full(&self, delivery: &Delivery) -> bool {
        let max_bytes = delivery.batch.max_bytes.get() as usize;
        self.count >= delivery.batch.max_items as u64 || self.bytes >= max_bytes || self.translated >= max_bytes
    }

    pub fn is_old(&self, delivery: &Delivery) -> bool {
        self.opened.elapsed() >= delivery.batch.timeout.get()
    }
}

/// A batch encoded into its request body, waiting to be sent.
pub(crate) struct Sealed {
    pub tenant: Tenant,
    pub body: Bytes,
    pub count: u64,
    pub held: Vec<Held>,
    pub raw: Vec<Raw>,
}
