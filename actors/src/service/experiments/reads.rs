//! Reading experiments: this node's own from its memory (the freshest), every other from
//! the replica (see `kept`), so no read asks a peer.

use tokio::sync::watch;
use troupe_runtime::store::{Store, StoreError, View};

use super::kept::{Kept, EXPERIMENTS};
use super::spread::{merged, Spread};
use super::{lock, End, Experiment, Experiments};
use crate::error::ApiError;
use crate::service::Api;

impl Experiments {
    /// Follows the store's writes to the experiments' records (once, when the node starts),
    /// and aborts the experiments recorded as running on a node that restarted or was lost.
    pub async fn follow(&self, store: &Store) -> Result<(), StoreError> {
        self.watch.follow_keys(store, &[EXPERIMENTS]).await?;
        super::kept::abort_the_lost(self, store).await
    }

    /// An experiment now: one of this node's from memory, any other from `v` (one in parts
    /// with each part as its own record says).
    pub(super) fn now_in(&self, v: &View<'_>, id: &str) -> Result<Option<Experiment>, StoreError> {
        self.now_of(v, id, Kept::read(v, id)?)
    }

    /// What [`Self::now_in`] answers for `id` whose record in `v` is `kept` (already read).
    fn now_of(&self, v: &View<'_>, id: &str, kept: Option<Kept>) -> Result<Option<Experiment>, StoreError> {
        if let Some(e) = self.shown(id) {
            return Ok(Some(e));
        }
        Ok(match kept {
            None => None,
            Some(Kept::One(e)) => Some(e),
            Some(Kept::Parts(mut s)) => {
                for part in s.parts.values_mut() {
                    let now = match self.shown(&part.id) {
                        Some(e) => Some(e),
                        None => match Kept::read(v, &part.id)? {
                            Some(Kept::One(e)) => Some(e),
                            _ => None,
                        },
                    };
                    if let Some(now) = now {
                        *part = now;
                    }
                }
                Some(merged(id, &s))
            }
        })
    }

    /// The records whose writes change what [`Self::now_in`] answers for `id`.
    pub(super) fn subjects(&self, v: &View<'_>, id: &str) -> Result<Vec<String>, StoreError> {
        let mut subjects = vec![id.to_owned()];
        if let Some(Kept::Parts(s)) = Kept::read(v, id)? {
            subjects.extend(s.parts.values().map(|p| p.id.clone()));
        }
        Ok(subjects)
    }

    /// The experiment over several nodes of this id, if it is one.
    pub(super) async fn spread(&self, id: &str) -> Result<Option<Spread>, StoreError> {
        let id = id.to_owned();
        self.store
            .view(move |v| match Kept::read(v, &id)? {
                Some(Kept::Parts(s)) => Ok(Some(s)),
                _ => Ok(None),
            })
            .await
    }

    /// This node's experiments, as its memory holds them.
    pub(super) fn local(&self) -> Vec<Experiment> {
        lock(&self.records).values().map(|r| r.view.borrow().clone()).collect()
    }

    /// Ends it here, as the cluster's record (ABORTED meanwhile) says; reads show that record.
    pub(super) fn overtaken(&self, id: &str, end: End) {
        if let Some(r) = lock(&self.records).get_mut(id) {
            r.overtaken = true;
        }
        self.end_now(id, end);
    }

    /// It as reads show it when it runs here: its view, unless the cluster's record stands.
    pub(super) fn shown(&self, id: &str) -> Option<Experiment> {
        lock(&self.records)
            .get(id)
            .filter(|r| !r.overtaken)
            .map(|r| r.view.borrow().clone())
    }

    /// This node's experiments as reads show them (see [`Self::shown`]).
    fn shown_here(&self) -> Vec<Experiment> {
        lock(&self.records)
            .values()
            .filter(|r| !r.overtaken)
            .map(|r| r.view.borrow().clone())
            .collect()
    }

    /// Sends `id` as it is now to `tx` at each write applied to `subjects`' records, until
    /// it ends, its record is gone, or nobody listens.
    pub(super) fn follow_records(&self, id: &str, subjects: Vec<String>, tx: watch::Sender<Experiment>) {
        let watching: Vec<_> = subjects.iter().map(|s| self.watch.watch(s)).collect();
        let (experiments, id) = (self.clone(), id.to_owned());
        tokio::spawn(async move {
            while !tx.borrow().state.is_final() {
                // Listening before reading: a write applied in between still wakes this.
                let mut woken: Vec<_> = watching.iter().map(|w| Box::pin(w.notify.notified())).collect();
                woken.iter_mut().for_each(|n| {
                    n.as_mut().enable();
                });
                let (reader, key) = (experiments.clone(), id.clone());
                match experiments.store.view(move |v| reader.now_in(v, &key)).await {
                    Ok(Some(now)) => {
                        tx.send_if_modified(|seen| {
                            let changed = format!("{seen:?}") != format!("{now:?}");
                            *seen = now;
                            changed
                        });
                    }
                    // Forgotten: the stream ends.
                    Ok(None) => return,
                    Err(e) => tracing::debug!(experiment = %id, error = %e, "an experiment's record could not be read"),
                }
                if tx.borrow().state.is_final() {
                    return;
                }
                tokio::select! {
                    _ = futures::future::select_all(woken) => {}
                    _ = tx.closed() => return,
                }
            }
        });
    }
}

impl Api {
    /// Every experiment of the cluster, newest first: this node's from its memory, the
    /// others' from the replica.
    pub async fn experiments(&self) -> Result<Vec<Experiment>, ApiError> {
        self.experiments.ensure_enabled()?;
        let experiments = self.experiments.clone();
        let mut all = self
            .ctx
            .store
            .view(move |v| {
                let mut kept = Vec::new();
                v.scan(EXPERIMENTS, None, |id, bytes| {
                    kept.push((id.to_owned(), troupe_runtime::codec::decode::<Kept>(bytes)?));
                    Ok(true)
                })?;
                let mut all = Vec::new();
                for (id, kept) in kept {
                    all.extend(experiments.now_of(v, &id, Some(kept))?);
                }
                Ok(all)
            })
            .await?;
        // This node's experiments whose first record is still on its way.
        for e in self.experiments.shown_here() {
            if !all.iter().any(|kept| kept.id == e.id) {
                all.push(e);
            }
        }
        all.sort_by(|a, b| b.id.cmp(&a.id));
        Ok(all)
    }
}
