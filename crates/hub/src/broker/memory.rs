//! The in-process broker: the default, needing nothing outside the binary.
//!
//! Each channel with local subscribers has a [`Stream`] holding its epoch and last offset. A publish
//! takes that stream's lock, assigns the next offset and fans out before releasing it, which is what
//! keeps per-channel order under concurrent publishers. The lock is per channel: publishes to
//! different channels do not wait for each other.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{BoxFuture, Broker, BrokerError, Receipt};
use crate::event::Event;
use crate::fanout::Fanout;
use crate::registry::StreamPosition;

#[derive(Debug)]
struct Stream {
    epoch: String,
    offset: u64,
}

/// The in-memory broker.
#[derive(Debug)]
pub struct MemoryBroker {
    fanout: Fanout,
    streams: Mutex<HashMap<String, Arc<Mutex<Stream>>>>,
}

impl MemoryBroker {
    /// A broker delivering through `fanout`.
    pub fn new(fanout: Fanout) -> MemoryBroker {
        MemoryBroker { fanout, streams: Mutex::new(HashMap::new()) }
    }

    fn stream(&self, channel: &str) -> Option<Arc<Mutex<Stream>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner()).get(channel).cloned()
    }
}

/// A fresh epoch: unique per process run and per channel incarnation.
pub fn new_epoch() -> String {
    let id = uuid::Uuid::new_v4();
    id.simple().to_string()[..12].to_string()
}

impl Broker for MemoryBroker {
    fn subscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<StreamPosition, BrokerError>> {
        let mut map = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let stream = map
            .entry(channel.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(Stream { epoch: new_epoch(), offset: 0 })));
        let s = stream.lock().unwrap_or_else(|e| e.into_inner());
        let pos = StreamPosition { offset: s.offset, epoch: s.epoch.clone() };
        Box::pin(std::future::ready(Ok(pos)))
    }

    fn unsubscribe<'a>(&'a self, channel: &'a str) -> BoxFuture<'a, Result<(), BrokerError>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner()).remove(channel);
        Box::pin(std::future::ready(Ok(())))
    }

    fn publish<'a>(&'a self, channel: &'a str, event: Arc<Event>) -> BoxFuture<'a, Result<Receipt, BrokerError>> {
        let receipt = match self.stream(channel) {
            None => Receipt { offset: None, epoch: None, delivered: 0 },
            Some(stream) => {
                let mut s = stream.lock().unwrap_or_else(|e| e.into_inner());
                s.offset += 1;
                let delivered = self.fanout.deliver(channel, s.offset, &event);
                Receipt { offset: Some(s.offset), epoch: Some(s.epoch.clone()), delivered }
            }
        };
        Box::pin(std::future::ready(Ok(receipt)))
    }

    fn broadcast(&self, event: Arc<Event>) -> BoxFuture<'_, Result<u64, BrokerError>> {
        Box::pin(std::future::ready(Ok(self.fanout.deliver_to_all(&event))))
    }

    fn name(&self) -> &'static str {
        "memory"
    }
}
