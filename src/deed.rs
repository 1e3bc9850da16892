//! The deed: one unit of work that changes state. It is opened on a write transaction, collects
//! what the transaction queues for the sender (outbox rows), and commits only with its audit
//! entry, which it appends LAST (the entry locks the chain's head, which every writer needs, so
//! the head is held as briefly as possible); after the commit it wakes the sender.
//!
//! Domain code cannot commit a transaction any other way: [`Tx::commit`] asks for a [`Seal`],
//! which only this module makes. The few writes that are not deeds of anyone (the login
//! throttle's counters, a TOTP step used, a data key re-wrapped) say why with a
//! [`Bookkeeping`] reason.

use std::ops::{Deref, DerefMut};

use chrono::{DateTime, Utc};

use crate::App;
use crate::audit::Entry;
use crate::db::{self, Tx, audit as audit_db};

/// Proof that the commit comes from a deed (or from the store's own bookkeeping).
pub struct Seal(());

/// The proof that a deed's audit entry is in its transaction, with the entry's sequence number.
pub struct Recorded(i64);

impl Recorded {
    pub fn seq(&self) -> i64 {
        self.0
    }
}

/// A write that changes no one's state and so has no audit entry of its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bookkeeping {
    /// The login throttle counts an attempt before the password is checked.
    LoginThrottle,
    /// A TOTP step accepted (it may not be used again) or a failure counted.
    TotpStep,
    /// A data key re-wrapped under the next master key (the ciphertext is untouched).
    Rewrap,
    /// A read that needed the write lock (the current sealing key, created on first use).
    SealingKey,
    /// A scheduled notice (digest, reminder, warning) queued by the service itself; the
    /// outbox row is its own record.
    ScheduledNotice,
}

/// A state change in progress. Dereferences to its transaction for the store's functions.
pub struct Deed<'a> {
    app: &'a App,
    tx: Tx,
    queued: bool,
    /// This process's turn on the audit chain, from the deed's entry to its commit.
    turn: Option<audit_db::HeadTurn>,
}

impl<'a> Deed<'a> {
    /// Opens a deed on a new write transaction.
    pub async fn open(app: &'a App) -> db::Result<Deed<'a>> {
        Ok(Deed {
            app,
            tx: app.db.begin().await?,
            queued: false,
            turn: None,
        })
    }

    /// An outbox row was written: the sender is woken after the commit.
    pub fn queued(&mut self) {
        self.queued = true;
    }

    /// Appends the audit entry, commits, and wakes the sender if anything was queued.
    /// Returns the entry's sequence number.
    pub async fn commit(mut self, entry: &Entry, now: DateTime<Utc>) -> db::Result<i64> {
        let seq = self.append(entry, now).await?;
        self.finish().await?;
        Ok(seq)
    }

    async fn append(&mut self, entry: &Entry, now: DateTime<Utc>) -> db::Result<i64> {
        let app = self.app;
        audit_db::append(
            &mut self.tx,
            &app.sealer,
            &app.chain,
            &mut self.turn,
            entry,
            now,
        )
        .await
    }

    /// Commits; then the chain's head is this deed's entry, and the sender is woken.
    async fn finish(self) -> db::Result<()> {
        self.tx.commit(Seal(())).await?;
        if let Some(turn) = self.turn {
            turn.committed();
        }
        if self.queued {
            self.app.notifier.wake();
        }
        Ok(())
    }

    /// Appends the audit entry before the deed's last writes, for a deed whose notice cites
    /// the entry's sequence number; [`Deed::commit_recorded`] then commits with the proof.
    pub async fn record_first(
        &mut self,
        entry: &Entry,
        now: DateTime<Utc>,
    ) -> db::Result<Recorded> {
        Ok(Recorded(self.append(entry, now).await?))
    }

    /// Commits a deed whose entry [`Deed::record_first`] appended.
    pub async fn commit_recorded(self, _entry: Recorded) -> db::Result<()> {
        self.finish().await
    }

    /// Commits a write that is nobody's deed (see [`Bookkeeping`]); it may queue nothing.
    pub async fn commit_bookkeeping(self, why: Bookkeeping) -> db::Result<()> {
        debug_assert!(
            !self.queued || why == Bookkeeping::ScheduledNotice,
            "bookkeeping ({why:?}) queued a notice"
        );
        self.finish().await
    }

    /// Audits an entry in a transaction of its own: a refusal decided before any write.
    pub async fn audit_alone(app: &App, entry: &Entry, now: DateTime<Utc>) -> db::Result<i64> {
        Deed::open(app).await?.commit(entry, now).await
    }
}

impl Deref for Deed<'_> {
    type Target = Tx;
    fn deref(&self) -> &Tx {
        &self.tx
    }
}

impl DerefMut for Deed<'_> {
    fn deref_mut(&mut self) -> &mut Tx {
        &mut self.tx
    }
}
