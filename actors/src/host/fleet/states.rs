//! A host's state changes (its link, its mode, a drain's end) and the events that record them.

use serde_json::json;
use troupe_runtime::events::NewEvent;
use troupe_runtime::store::Batch;

use super::super::link::Link;
use super::super::{DrainProgress, HostMode, HostState, HostView, NodeCapacity};
use super::Fleet;
use crate::error::ApiError;

impl Fleet {
    /// Changes the host's link; records the state change (HOST_UP, HOST_UNREACHABLE, HOST_DOWN)
    /// when there is one.
    pub async fn set_link(
        &self,
        host: &str,
        link: Link,
        capacity: Option<NodeCapacity>,
        error: Option<String>,
    ) -> Result<(), ApiError> {
        let change = {
            let mut inner = self.lock();
            let Some(e) = inner.hosts.get_mut(host) else {
                return Ok(());
            };
            let before = e.state();
            e.link = link;
            if capacity.is_some() && capacity != e.capacity {
                e.capacity = capacity;
                super::claims::ratios(e);
            }
            if link == Link::Up {
                e.last_error = None;
            } else if error.is_some() {
                e.last_error = error.clone();
            }
            // A reservation that leaves the host no memory is taken (the host may grow),
            // and said: every VM placed on it would be refused for memory.
            if let Some(c) = e
                .capacity
                .filter(|c| link == Link::Up && e.spec.reserved_memory_mib >= c.memory_mib)
            {
                e.last_error = Some(format!(
                    "reservedMemoryMiB {} leaves none of the host's {} MiB for VMs",
                    e.spec.reserved_memory_mib, c.memory_mib
                ));
            }
            let after = e.state();
            (before != after).then(|| {
                e.since = troupe_runtime::clock::now();
                (e.spec.name.clone(), before, after)
            })
        };
        if let Some((name, before, after)) = change {
            self.host_event(host, &name, before, after, json!({ "error": error }))
                .await?;
        }
        Ok(())
    }

    /// Changes the host's mode, durably, recording the state change.
    pub async fn set_mode(&self, host: &str, mode: HostMode) -> Result<HostView, ApiError> {
        self.set_mode_from(host, None, mode).await
    }

    /// Records a drain's progress, unless the drain was called off (the host is no longer
    /// DRAINING).
    pub fn drain_progress(&self, host: &str, drain: DrainProgress) {
        if let Some(e) = self.lock().hosts.get_mut(host) {
            if e.spec.mode == HostMode::Draining {
                e.drain = Some(drain);
            }
        }
    }

    /// Ends a drain: the host enters MAINTENANCE if every VM moved and it is still DRAINING.
    /// A drain called off meanwhile (`setHostMaintenance(false)`) leaves the host UP.
    /// Either way the end is a `HOST_DRAIN_ENDED` event naming the state the host is left in.
    pub async fn finish_drain(&self, host: &str, drain: DrainProgress) -> Result<(), ApiError> {
        let moved_all = drain.failed == 0;
        self.drain_progress(host, drain.clone());
        let view = if moved_all {
            self.set_mode_from(host, Some(HostMode::Draining), HostMode::Maintenance)
                .await?
        } else {
            self.view(host)
                .ok_or_else(|| ApiError::NotFound(format!("no host {host}")))?
        };
        let event = NewEvent::new(
            "HOST_DRAIN_ENDED",
            Some(host.to_owned()),
            json!({ "name": view.spec.name, "total": drain.total, "moved": drain.moved, "failed": drain.failed,
                    "state": view.state.name() }),
        );
        self.store.write(Batch::new().event(event)).await?;
        Ok(())
    }

    /// [`Fleet::set_mode`], only from mode `from` when given (else nothing changes).
    async fn set_mode_from(&self, host: &str, from: Option<HostMode>, mode: HostMode) -> Result<HostView, ApiError> {
        let (spec, change) = {
            let mut inner = self.lock();
            let e = inner
                .hosts
                .get_mut(host)
                .ok_or_else(|| ApiError::NotFound(format!("no host {host}")))?;
            if from.is_some_and(|from| e.spec.mode != from) {
                return Ok(e.view());
            }
            let before = e.state();
            e.spec.mode = mode;
            if mode != HostMode::Draining {
                e.drain = e.drain.take().filter(|d| d.done);
            }
            // A drain's failures are its error while the host drains; back in service with
            // its link up, it has none left (the drain's figures stay in `drain`).
            if mode == HostMode::Active && e.link == Link::Up {
                e.last_error = None;
            }
            let after = e.state();
            if before != after {
                e.since = troupe_runtime::clock::now();
            }
            (e.spec.clone(), (before != after).then_some((before, after)))
        };
        let mut batch = Batch::new().put(crate::tables::HOSTS, host, troupe_runtime::codec::encode(&spec)?);
        if let Some((before, after)) = change {
            batch = batch.event(host_event(
                host,
                &spec.name,
                before,
                after,
                json!({ "mode": format!("{mode:?}") }),
            ));
        }
        self.store.write(batch).await?;
        self.view(host)
            .ok_or_else(|| ApiError::NotFound(format!("no host {host}")))
    }

    async fn host_event(
        &self,
        host: &str,
        name: &str,
        before: HostState,
        after: HostState,
        data: serde_json::Value,
    ) -> Result<(), ApiError> {
        tracing::info!(host = %name, from = before.name(), to = after.name(), "host state changed");
        self.store
            .write(Batch::new().event(host_event(host, name, before, after, data)))
            .await?;
        Ok(())
    }
}

fn host_event(host: &str, name: &str, before: HostState, after: HostState, mut data: serde_json::Value) -> NewEvent {
    if let Some(map) = data.as_object_mut() {
        map.insert("name".into(), json!(name));
        map.insert("from".into(), json!(before.name()));
        map.insert("to".into(), json!(after.name()));
    }
    NewEvent::new(format!("HOST_{}", after.name()), Some(host.to_owned()), data)
}
