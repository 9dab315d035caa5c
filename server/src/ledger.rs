//! Per-(identity, model) query budget ledger, in the server's embedded
//! SQLite database (`<data_dir>/blindfold.db`, table `budgets`).
//!
//! Each row counts the answers an identity has received from a model and
//! the Rényi-DP they cost, as the RDP per order `S = Σ 1/σ_t²` of
//! [`blindfold_runtime::dp`] (0 for models without a DP policy). Limits
//! are not stored: they come from the configuration at each call, so
//! changing a limit applies to past usage too.
//!
//! Atomicity: a debit reads, checks and writes the row inside one
//! `BEGIN IMMEDIATE` transaction, which takes SQLite's write lock before
//! the read. Two debits, from two threads or two processes with their own
//! connections, therefore serialize, and a limit of K grants exactly K
//! answers however they race. A request is granted whole or refused whole.
//!
//! The ledger opens its own connection with the same discipline as the key
//! store (WAL, `synchronous = FULL`, a busy timeout), so a granted debit is
//! on disk before the answer is computed. A request's debit is also
//! recorded in table `pending` in the same transaction and settled (the
//! row removed) once its answer is produced, before it is sent; rows still
//! there at the next start belong to requests a crash cut short, and
//! [`Ledger::refund_crashed`] gives them back. So a crash costs an honest
//! caller nothing, and never loses a debit whose answer went out.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use blindfold_runtime::dp;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};
use thiserror::Error;

/// How long a connection waits for another writer (another thread's or
/// process's transaction) before giving up with "database is locked".
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the ledger could not be read or written. Running out of budget is
/// not an error: see [`Exhausted`].
#[derive(Debug, Error)]
pub enum LedgerError {
    #[error("budget ledger database: {0}")]
    Db(#[from] rusqlite::Error),
    #[error("budget ledger i/o on {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A caller passed an impossible argument (a bug or a bad config).
    #[error("budget ledger: invalid argument: {0}")]
    Invalid(String),
    /// The stored row holds values no debit could have written.
    #[error("budget ledger: corrupt row for ({identity}, {model}): {message}")]
    Corrupt {
        identity: String,
        model: String,
        message: String,
    },
    #[error("budget ledger: lock poisoned")]
    Poisoned,
}

/// Budget of one (identity, model) pair; `None` means unlimited (usage is
/// still recorded).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Limits {
    /// Most answers the identity may receive.
    pub answers: Option<u64>,
    /// `(epsilon limit, delta)`: the accumulated RDP, converted with
    /// [`dp::epsilon`] at δ, may not exceed the limit.
    pub epsilon: Option<(f64, f64)>,
}

/// Recorded usage of one (identity, model) pair.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Usage {
    pub answers: u64,
    /// RDP per order `S` (RDP at order λ is λ·S).
    pub rdp: f64,
}

/// Usage against limits, after a debit or as queried.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Remaining {
    pub answers_used: u64,
    pub answers_limit: Option<u64>,
    /// ε spent at `delta`; `Some` when the limits carry an ε budget.
    pub epsilon_spent: Option<f64>,
    pub epsilon_limit: Option<f64>,
    pub delta: Option<f64>,
}

impl Remaining {
    fn new(usage: Usage, limits: &Limits) -> Self {
        Self {
            answers_used: usage.answers,
            answers_limit: limits.answers,
            epsilon_spent: limits
                .epsilon
                .map(|(_, delta)| dp::epsilon(usage.rdp, delta)),
            epsilon_limit: limits.epsilon.map(|(limit, _)| limit),
            delta: limits.epsilon.map(|(_, delta)| delta),
        }
    }
}

/// Why a debit was refused; nothing was debited.
#[derive(Clone, Copy, Debug, PartialEq, Error)]
pub enum Exhausted {
    #[error("answer budget exhausted: {used} of {limit} answers used, {requested} requested")]
    Answers {
        used: u64,
        limit: u64,
        requested: u64,
    },
    #[error(
        "privacy budget exhausted: epsilon {spent:.4} of {limit} spent (delta {delta:e}), \
         this request would bring it to {would_be:.4}"
    )]
    Epsilon {
        spent: f64,
        would_be: f64,
        limit: f64,
        delta: f64,
    },
}

/// The budget ledger: one SQLite connection to `<data_dir>/blindfold.db`.
pub struct Ledger {
    conn: Mutex<Connection>,
}

impl Ledger {
    /// Opens (creating if needed) the ledger table in `<dir>/blindfold.db`.
    pub fn open(dir: &Path) -> Result<Self, LedgerError> {
        std::fs::create_dir_all(dir).map_err(|source| LedgerError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let conn = Connection::open(dir.join("blindfold.db"))?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // Switching a new database to WAL takes an exclusive lock and SQLite
        // answers SQLITE_BUSY at once, without the busy handler, when another
        // connection is opening it at the same moment: retry until the busy
        // timeout. Every step is idempotent.
        let started = Instant::now();
        loop {
            match prepare(&conn) {
                Ok(()) => break,
                Err(e) if is_busy(&e) && started.elapsed() < BUSY_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Self {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> Result<MutexGuard<'_, Connection>, LedgerError> {
        self.conn.lock().map_err(|_| LedgerError::Poisoned)
    }

    /// Atomically checks and debits `answers` answers costing
    /// `rdp_per_answer` each (0 for non-DP policies). Either the whole
    /// debit happens or nothing does.
    ///
    /// `Ok(Ok(remaining))`: granted, `remaining` includes this debit.
    /// `Ok(Err(exhausted))`: refused, nothing recorded. The answer limit is
    /// checked first; the ε limit allows `dp::epsilon(S_after, δ) ≤ limit`,
    /// the same predicate as [`dp::max_answers`].
    pub fn debit(
        &self,
        identity: &str,
        model: &str,
        answers: u64,
        rdp_per_answer: f64,
        limits: &Limits,
    ) -> Result<Result<Remaining, Exhausted>, LedgerError> {
        Ok(self
            .debit_inner(identity, model, answers, rdp_per_answer, limits, false)?
            .map(|(remaining, _)| remaining))
    }

    /// [`Self::debit`], recorded as pending in the same transaction: the
    /// debit stands once [`Self::settle`] says its answer was produced, is
    /// given back by [`Self::refund_pending`] when it was not, and is given
    /// back by [`Self::refund_crashed`] at the next start if the server died
    /// first. So a crash between debit and answer costs the caller nothing.
    pub fn debit_pending(
        &self,
        identity: &str,
        model: &str,
        answers: u64,
        rdp_per_answer: f64,
        limits: &Limits,
    ) -> Result<Result<(Remaining, Pending), Exhausted>, LedgerError> {
        Ok(self
            .debit_inner(identity, model, answers, rdp_per_answer, limits, true)?
            .map(|(remaining, pending)| (remaining, Pending(pending.unwrap_or(-1)))))
    }

    /// The answer a pending debit paid for was produced: the debit stands.
    /// Durable before the caller sends the answer.
    pub fn settle(&self, pending: Pending) -> Result<(), LedgerError> {
        let conn = self.conn()?;
        conn.execute("DELETE FROM pending WHERE id = ?1", [pending.0])?;
        Ok(())
    }

    /// Gives back a pending debit whose request produced no answer.
    /// Idempotent: a debit already settled or refunded is left alone.
    pub fn refund_pending(&self, pending: Pending) -> Result<(), LedgerError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let row: Option<(String, String, i64, f64)> = tx
            .query_row(
                "SELECT identity, model, answers, rdp_per_answer FROM pending WHERE id = ?1",
                [pending.0],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        if let Some((identity, model, answers, rdp)) = row {
            give_back(&tx, &identity, &model, answers, rdp)?;
            tx.execute("DELETE FROM pending WHERE id = ?1", [pending.0])?;
            tx.commit()?;
        }
        Ok(())
    }

    /// Gives back every debit still pending: the requests of a server that
    /// died before answering. Call once at start, while no request runs
    /// (the data-directory lock makes this server the only writer).
    /// Returns (requests, answers) refunded.
    pub fn refund_crashed(&self) -> Result<(u64, u64), LedgerError> {
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rows: Vec<(String, String, i64, f64)> = {
            let mut stmt =
                tx.prepare("SELECT identity, model, answers, rdp_per_answer FROM pending")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))?
                .collect::<Result<_, _>>()?;
            rows
        };
        let mut answers_back = 0u64;
        for (identity, model, answers, rdp) in &rows {
            give_back(&tx, identity, model, *answers, *rdp)?;
            answers_back += u64::try_from(*answers).unwrap_or(0);
        }
        tx.execute("DELETE FROM pending", [])?;
        tx.commit()?;
        Ok((rows.len() as u64, answers_back))
    }

    /// Debits still pending (requests in flight, or lost to a crash).
    pub fn pending_count(&self) -> Result<u64, LedgerError> {
        let conn = self.conn()?;
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM pending", [], |r| r.get(0))?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    fn debit_inner(
        &self,
        identity: &str,
        model: &str,
        answers: u64,
        rdp_per_answer: f64,
        limits: &Limits,
        pending: bool,
    ) -> Result<Result<(Remaining, Option<i64>), Exhausted>, LedgerError> {
        check_cost(rdp_per_answer)?;
        check_limits(limits)?;
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let usage = read_usage(&tx, identity, model)?;
        let after = Usage {
            answers: usage.answers.checked_add(answers).ok_or_else(|| {
                LedgerError::Invalid(format!("{answers} answers overflow the answer count"))
            })?,
            rdp: usage.rdp + answers as f64 * rdp_per_answer,
        };
        if let Some(limit) = limits.answers {
            if after.answers > limit {
                return Ok(Err(Exhausted::Answers {
                    used: usage.answers,
                    limit,
                    requested: answers,
                }));
            }
        }
        if let Some((limit, delta)) = limits.epsilon {
            let would_be = dp::epsilon(after.rdp, delta);
            if would_be.is_nan() || would_be > limit {
                return Ok(Err(Exhausted::Epsilon {
                    spent: dp::epsilon(usage.rdp, delta),
                    would_be,
                    limit,
                    delta,
                }));
            }
        }
        if !after.rdp.is_finite() {
            return Err(LedgerError::Invalid(format!(
                "{answers} answers at {rdp_per_answer} RDP per order overflow the RDP total"
            )));
        }
        write_usage(&tx, identity, model, after)?;
        let id = if pending {
            let n = i64::try_from(answers)
                .map_err(|_| LedgerError::Invalid(format!("{answers} answers exceed i64")))?;
            tx.execute(
                "INSERT INTO pending (identity, model, answers, rdp_per_answer, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
                params![identity, model, n, rdp_per_answer, now_secs()],
            )?;
            Some(tx.last_insert_rowid())
        } else {
            None
        };
        tx.commit()?;
        Ok(Ok((Remaining::new(after, limits), id)))
    }

    /// Gives back a debit whose request produced no answer (evaluation
    /// failed or was cancelled). Usage never goes below zero: refunding
    /// more than was debited is logged and clamped.
    pub fn refund(
        &self,
        identity: &str,
        model: &str,
        answers: u64,
        rdp_per_answer: f64,
    ) -> Result<(), LedgerError> {
        check_cost(rdp_per_answer)?;
        let mut conn = self.conn()?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let usage = read_usage(&tx, identity, model)?;
        let rdp = answers as f64 * rdp_per_answer;
        if answers > usage.answers || rdp > usage.rdp * (1.0 + 1e-9) {
            tracing::warn!(
                identity,
                model,
                answers,
                rdp,
                used_answers = usage.answers,
                used_rdp = usage.rdp,
                "refund exceeds recorded usage; clamping at zero"
            );
        }
        let after = Usage {
            answers: usage.answers.saturating_sub(answers),
            // floating error can leave a tiny negative after a full refund
            rdp: (usage.rdp - rdp).max(0.0),
        };
        if after == usage {
            return Ok(()); // nothing to give back; leave no empty row
        }
        write_usage(&tx, identity, model, after)?;
        tx.commit()?;
        Ok(())
    }

    /// Usage of (`identity`, `model`) against `limits`, without debiting.
    pub fn remaining(
        &self,
        identity: &str,
        model: &str,
        limits: &Limits,
    ) -> Result<Remaining, LedgerError> {
        check_limits(limits)?;
        Ok(Remaining::new(self.usage(identity, model)?, limits))
    }

    /// Recorded usage of (`identity`, `model`); zero if never debited.
    pub fn usage(&self, identity: &str, model: &str) -> Result<Usage, LedgerError> {
        let conn = self.conn()?;
        read_usage(&conn, identity, model)
    }
}

/// A debit recorded as pending ([`Ledger::debit_pending`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending(i64);

/// Subtracts a pending debit from its row, clamped at zero.
fn give_back(
    conn: &Connection,
    identity: &str,
    model: &str,
    answers: i64,
    rdp_per_answer: f64,
) -> Result<(), LedgerError> {
    let usage = read_usage(conn, identity, model)?;
    let answers = u64::try_from(answers).unwrap_or(0);
    let after = Usage {
        answers: usage.answers.saturating_sub(answers),
        rdp: (usage.rdp - answers as f64 * rdp_per_answer).max(0.0),
    };
    if after != usage {
        write_usage(conn, identity, model, after)?;
    }
    Ok(())
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Puts a fresh connection in the key store's durability mode (WAL,
/// `synchronous = FULL`) and creates the table.
fn prepare(conn: &Connection) -> rusqlite::Result<()> {
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS budgets (
             identity TEXT NOT NULL,
             model TEXT NOT NULL,
             answers INTEGER NOT NULL,
             rdp REAL NOT NULL,
             updated_at INTEGER NOT NULL,
             PRIMARY KEY (identity, model)
         );
         CREATE TABLE IF NOT EXISTS pending (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             identity TEXT NOT NULL,
             model TEXT NOT NULL,
             answers INTEGER NOT NULL,
             rdp_per_answer REAL NOT NULL,
             started_at INTEGER NOT NULL
         );",
    )
}

/// Whether `e` is SQLite's "another connection holds the lock".
fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// A per-answer cost must be a finite RDP per order ≥ 0.
fn check_cost(rdp_per_answer: f64) -> Result<(), LedgerError> {
    if rdp_per_answer.is_finite() && rdp_per_answer >= 0.0 {
        Ok(())
    } else {
        Err(LedgerError::Invalid(format!(
            "RDP per answer must be finite and >= 0, got {rdp_per_answer}"
        )))
    }
}

/// An ε budget needs a limit ≥ 0 (not NaN) and 0 < δ < 1.
fn check_limits(limits: &Limits) -> Result<(), LedgerError> {
    if let Some((limit, delta)) = limits.epsilon {
        if limit.is_nan() || limit < 0.0 {
            return Err(LedgerError::Invalid(format!(
                "epsilon limit must be >= 0, got {limit}"
            )));
        }
        if !dp::valid_delta(delta) {
            return Err(LedgerError::Invalid(format!(
                "delta must be in (0, 1), got {delta}"
            )));
        }
    }
    Ok(())
}

fn read_usage(conn: &Connection, identity: &str, model: &str) -> Result<Usage, LedgerError> {
    let row: Option<(i64, f64)> = conn
        .query_row(
            "SELECT answers, rdp FROM budgets WHERE identity = ?1 AND model = ?2",
            params![identity, model],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let Some((answers, rdp)) = row else {
        return Ok(Usage::default());
    };
    let corrupt = |message: String| LedgerError::Corrupt {
        identity: identity.to_string(),
        model: model.to_string(),
        message,
    };
    let answers =
        u64::try_from(answers).map_err(|_| corrupt(format!("negative answer count {answers}")))?;
    if !(rdp.is_finite() && rdp >= 0.0) {
        return Err(corrupt(format!("RDP {rdp} is not a finite value >= 0")));
    }
    Ok(Usage { answers, rdp })
}

fn write_usage(
    conn: &Connection,
    identity: &str,
    model: &str,
    usage: Usage,
) -> Result<(), LedgerError> {
    let answers = i64::try_from(usage.answers)
        .map_err(|_| LedgerError::Invalid(format!("answer count {} exceeds i64", usage.answers)))?;
    let now = now_secs();
    conn.execute(
        "INSERT INTO budgets (identity, model, answers, rdp, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (identity, model) DO UPDATE SET
             answers = excluded.answers, rdp = excluded.rdp, updated_at = excluded.updated_at",
        params![identity, model, answers, usage.rdp, now],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Barrier};

    use super::*;

    const ANSWERS_10: Limits = Limits {
        answers: Some(10),
        epsilon: None,
    };

    fn granted(r: Result<Result<Remaining, Exhausted>, LedgerError>) -> Remaining {
        r.expect("ledger works").expect("debit granted")
    }

    fn refused(r: Result<Result<Remaining, Exhausted>, LedgerError>) -> Exhausted {
        match r.expect("ledger works") {
            Ok(rem) => panic!("debit granted: {rem:?}"),
            Err(e) => e,
        }
    }

    #[test]
    fn pending_debits_of_a_crashed_server_are_refunded_at_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::open(dir.path()).expect("open");
        let (_, answered) = ledger
            .debit_pending("alice", "m", 2, 0.5, &ANSWERS_10)
            .expect("ledger works")
            .expect("granted");
        let (_, lost) = ledger
            .debit_pending("alice", "m", 3, 0.5, &ANSWERS_10)
            .expect("ledger works")
            .expect("granted");
        let (_, failed) = ledger
            .debit_pending("bob", "m", 1, 0.0, &ANSWERS_10)
            .expect("ledger works")
            .expect("granted");
        ledger.settle(answered).expect("settle");
        ledger.refund_pending(failed).expect("refund");
        ledger
            .refund_pending(failed)
            .expect("a second refund is a no-op");
        assert_eq!(ledger.usage("alice", "m").expect("usage").answers, 5);
        assert_eq!(ledger.usage("bob", "m").expect("usage").answers, 0);
        assert_eq!(ledger.pending_count().expect("count"), 1);
        let _ = lost; // the server dies here: `lost` is never settled
        drop(ledger);
        let ledger = Ledger::open(dir.path()).expect("reopen");
        assert_eq!(ledger.refund_crashed().expect("refund"), (1, 3));
        let usage = ledger.usage("alice", "m").expect("usage");
        assert_eq!(
            usage.answers, 2,
            "the settled debit stands, the lost one is back"
        );
        assert!((usage.rdp - 1.0).abs() < 1e-12, "{}", usage.rdp);
        assert_eq!(ledger.refund_crashed().expect("again"), (0, 0));
        // settling a refunded debit changes nothing
        ledger.settle(lost).expect("settle");
        assert_eq!(ledger.usage("alice", "m").expect("usage").answers, 2);
    }

    #[test]
    fn debit_until_exhausted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::open(dir.path()).expect("open");
        let limits = Limits {
            answers: Some(100),
            epsilon: None,
        };
        let rem = granted(ledger.debit("alice", "m", 60, 0.0, &limits));
        assert_eq!(rem.answers_used, 60);
        assert_eq!(rem.answers_limit, Some(100));
        assert_eq!(rem.epsilon_spent, None);
        // 41 more do not fit: refused whole, not granted partly
        let e = refused(ledger.debit("alice", "m", 41, 0.0, &limits));
        assert_eq!(
            e,
            Exhausted::Answers {
                used: 60,
                limit: 100,
                requested: 41
            }
        );
        assert_eq!(ledger.usage("alice", "m").expect("usage").answers, 60);
        for i in 61..=100 {
            assert_eq!(
                granted(ledger.debit("alice", "m", 1, 0.0, &limits)).answers_used,
                i
            );
        }
        let e = refused(ledger.debit("alice", "m", 1, 0.0, &limits));
        assert_eq!(
            e.to_string(),
            "answer budget exhausted: 100 of 100 answers used, 1 requested"
        );
        // other identities and models have their own budgets
        assert_eq!(
            granted(ledger.debit("bob", "m", 1, 0.0, &limits)).answers_used,
            1
        );
        assert_eq!(
            granted(ledger.debit("alice", "other", 1, 0.0, &limits)).answers_used,
            1
        );
        let rem = ledger.remaining("alice", "m", &limits).expect("remaining");
        assert_eq!(rem.answers_used, 100);
    }

    #[test]
    fn unlimited_still_records() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::open(dir.path()).expect("open");
        let none = Limits::default();
        for _ in 0..5 {
            granted(ledger.debit("a", "m", 3, 0.01, &none));
        }
        let usage = ledger.usage("a", "m").expect("usage");
        assert_eq!(usage.answers, 15);
        assert!((usage.rdp - 0.15).abs() < 1e-12);
        let rem = ledger.remaining("a", "m", &none).expect("remaining");
        assert_eq!(rem.answers_used, 15);
        assert_eq!(rem.epsilon_spent, None);
    }

    #[test]
    fn epsilon_limit_matches_dp() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::open(dir.path()).expect("open");
        let (sigma, limit, delta) = (40.0, 2.0, 1e-5);
        let per = dp::gnmax_rdp_per_order(sigma);
        let limits = Limits {
            answers: None,
            epsilon: Some((limit, delta)),
        };
        let n = dp::max_answers(sigma, limit, delta, 0.0);
        assert!(n > 10, "test needs a budget of several answers, got {n}");
        // all n in one debit fit; n + 1 do not
        let e = refused(ledger.debit("a", "m", n + 1, per, &limits));
        match e {
            Exhausted::Epsilon {
                spent,
                would_be,
                limit: l,
                delta: d,
            } => {
                assert_eq!(spent, 0.0);
                assert_eq!(would_be, dp::epsilon((n + 1) as f64 * per, delta));
                assert!(would_be > limit);
                assert_eq!((l, d), (limit, delta));
            }
            other => panic!("expected an epsilon refusal, got {other:?}"),
        }
        assert!(e
            .to_string()
            .starts_with("privacy budget exhausted: epsilon"));
        let rem = granted(ledger.debit("a", "m", n, per, &limits));
        assert_eq!(rem.answers_used, n);
        assert_eq!(rem.epsilon_spent, Some(dp::epsilon(n as f64 * per, delta)));
        assert!(rem.epsilon_spent.unwrap_or(f64::INFINITY) <= limit);
        assert_eq!(rem.epsilon_limit, Some(limit));
        assert_eq!(rem.delta, Some(delta));
        refused(ledger.debit("a", "m", 1, per, &limits));
        // a non-DP (zero-cost) answer still fits under an exhausted ε budget
        granted(ledger.debit("a", "m", 1, 0.0, &limits));

        // one at a time: the ledger grants as many as max_answers says,
        // up to float rounding of the running sum
        let mut granted_one_by_one = 0u64;
        while let Ok(rem) = ledger
            .debit("b", "m", 1, per, &limits)
            .expect("ledger works")
        {
            granted_one_by_one += 1;
            let s = ledger.usage("b", "m").expect("usage").rdp;
            assert_eq!(rem.epsilon_spent, Some(dp::epsilon(s, delta)));
            assert_eq!(
                dp::max_answers(sigma, limit, delta, s),
                n - granted_one_by_one
            );
        }
        assert_eq!(granted_one_by_one, n);
    }

    #[test]
    fn both_limits_answers_first() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::open(dir.path()).expect("open");
        let limits = Limits {
            answers: Some(2),
            epsilon: Some((0.001, 1e-5)),
        };
        let e = refused(ledger.debit("a", "m", 3, 1.0, &limits));
        assert!(matches!(e, Exhausted::Answers { .. }));
        let e = refused(ledger.debit("a", "m", 1, 1.0, &limits));
        assert!(matches!(e, Exhausted::Epsilon { .. }));
        assert_eq!(ledger.usage("a", "m").expect("usage"), Usage::default());
    }

    #[test]
    fn refund_gives_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::open(dir.path()).expect("open");
        let per = dp::gnmax_rdp_per_order(20.0);
        for _ in 0..10 {
            granted(ledger.debit("a", "m", 1, per, &ANSWERS_10));
        }
        refused(ledger.debit("a", "m", 1, per, &ANSWERS_10));
        ledger.refund("a", "m", 3, per).expect("refund");
        let usage = ledger.usage("a", "m").expect("usage");
        assert_eq!(usage.answers, 7);
        assert!((usage.rdp - 7.0 * per).abs() < 1e-12);
        for _ in 0..3 {
            granted(ledger.debit("a", "m", 1, per, &ANSWERS_10));
        }
        refused(ledger.debit("a", "m", 1, per, &ANSWERS_10));
        // over-refunds clamp at zero; refunds of unknown pairs are no-ops
        ledger.refund("a", "m", 1000, per).expect("refund");
        assert_eq!(ledger.usage("a", "m").expect("usage"), Usage::default());
        ledger.refund("nobody", "m", 1, per).expect("refund");
        assert_eq!(ledger.usage("nobody", "m").expect("usage").answers, 0);
    }

    #[test]
    fn usage_persists_across_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let ledger = Ledger::open(dir.path()).expect("open");
            for _ in 0..4 {
                granted(ledger.debit("a", "m", 2, 0.5, &ANSWERS_10));
            }
        }
        let ledger = Ledger::open(dir.path()).expect("reopen");
        let usage = ledger.usage("a", "m").expect("usage");
        assert_eq!(
            usage,
            Usage {
                answers: 8,
                rdp: 4.0
            }
        );
        refused(ledger.debit("a", "m", 3, 0.5, &ANSWERS_10));
        granted(ledger.debit("a", "m", 2, 0.5, &ANSWERS_10));
    }

    #[test]
    fn invalid_arguments_and_corrupt_rows() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Ledger::open(dir.path()).expect("open");
        for cost in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                ledger.debit("a", "m", 1, cost, &Limits::default()),
                Err(LedgerError::Invalid(_))
            ));
            assert!(matches!(
                ledger.refund("a", "m", 1, cost),
                Err(LedgerError::Invalid(_))
            ));
        }
        for eps in [(f64::NAN, 1e-5), (-1.0, 1e-5), (1.0, 0.0), (1.0, 1.0)] {
            let limits = Limits {
                answers: None,
                epsilon: Some(eps),
            };
            assert!(matches!(
                ledger.debit("a", "m", 1, 0.1, &limits),
                Err(LedgerError::Invalid(_))
            ));
            assert!(matches!(
                ledger.remaining("a", "m", &limits),
                Err(LedgerError::Invalid(_))
            ));
        }
        assert!(matches!(
            ledger.debit("a", "m", u64::MAX, 0.0, &Limits::default()),
            Err(LedgerError::Invalid(_))
        ));
        assert_eq!(ledger.usage("a", "m").expect("usage"), Usage::default());
        ledger
            .conn()
            .expect("conn")
            .execute(
                "INSERT INTO budgets VALUES ('x', 'm', -3, 0.0, 0), ('y', 'm', 1, -1.0, 0)",
                [],
            )
            .expect("insert");
        assert!(matches!(
            ledger.debit("x", "m", 1, 0.0, &Limits::default()),
            Err(LedgerError::Corrupt { .. })
        ));
        assert!(matches!(
            ledger.remaining("y", "m", &Limits::default()),
            Err(LedgerError::Corrupt { .. })
        ));
    }

    /// Issues 1-answer debits from 16 threads until each is refused;
    /// returns the number granted in total.
    fn race(ledgers: Vec<Arc<Ledger>>) -> u64 {
        let barrier = Arc::new(Barrier::new(ledgers.len()));
        let total = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = ledgers
            .into_iter()
            .map(|ledger| {
                let barrier = barrier.clone();
                let total = total.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    for _ in 0..5 {
                        match ledger.debit("racer", "m", 1, 0.01, &ANSWERS_10) {
                            Ok(Ok(_)) => {
                                total.fetch_add(1, Ordering::SeqCst);
                            }
                            Ok(Err(Exhausted::Answers { limit: 10, .. })) => {}
                            other => panic!("unexpected debit outcome {other:?}"),
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("racer thread");
        }
        total.load(Ordering::SeqCst)
    }

    #[test]
    fn race_separate_connections() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().to_path_buf();
        // each thread opens its own connection, concurrently, like 16
        // processes starting on the same data directory
        let barrier = Arc::new(Barrier::new(16));
        let openers: Vec<_> = (0..16)
            .map(|_| {
                let barrier = barrier.clone();
                let path = path.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    Arc::new(Ledger::open(&path).expect("open"))
                })
            })
            .collect();
        let ledgers: Vec<_> = openers
            .into_iter()
            .map(|t| t.join().expect("opener thread"))
            .collect();
        assert_eq!(race(ledgers), 10);
        let ledger = Ledger::open(&path).expect("open");
        let usage = ledger.usage("racer", "m").expect("usage");
        assert_eq!(usage.answers, 10);
        assert!((usage.rdp - 0.1).abs() < 1e-12);
    }

    #[test]
    fn race_shared_ledger() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Arc::new(Ledger::open(dir.path()).expect("open"));
        assert_eq!(race(vec![ledger.clone(); 16]), 10);
        assert_eq!(ledger.usage("racer", "m").expect("usage").answers, 10);
    }
}
