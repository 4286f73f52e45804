//! Group commit: the writes of concurrent requests made together.
//!
//! A request hands its item to [`GroupCommit::submit`] and waits. One task
//! takes every item waiting when the previous batch finished and writes them
//! with one function call, typically one transaction with multi-row
//! statements: one commit, one sync to disk, a handful of statements, however
//! many requests. With SQLite's single writer this is what lets throughput
//! grow with concurrency instead of queueing one transaction per request.
//!
//! If a batch fails, each of its items is written again on its own, so one
//! bad item cannot fail its neighbours and every caller gets its own answer.

use std::{future::Future, sync::Arc};

use tokio::sync::{mpsc, oneshot};

struct Job<T, R, E> {
    item: T,
    reply: oneshot::Sender<Result<R, E>>,
}

/// Writes submitted items in batches; see the module documentation.
pub struct GroupCommit<T, R, E> {
    sender: mpsc::Sender<Job<T, R, E>>,
}

impl<T, R, E> std::fmt::Debug for GroupCommit<T, R, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

/// The group-commit task is gone (the service is stopping).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the writer is stopping")]
pub struct Stopped;

impl<T, R, E> GroupCommit<T, R, E>
where
    T: Clone + Send + 'static,
    R: Send + 'static,
    E: From<Stopped> + Send + 'static,
{
    /// Starts the writer task. `write` gets up to `max_batch` items and must
    /// return one result per item, in order.
    pub fn start<W, F>(max_batch: usize, write: W) -> Self
    where
        W: Fn(Vec<T>) -> F + Send + Sync + 'static,
        F: Future<Output = Result<Vec<R>, E>> + Send,
    {
        let (sender, mut receiver) = mpsc::channel::<Job<T, R, E>>(max_batch.max(1) * 4);
        let write = Arc::new(write);
        tokio::spawn(async move {
            while let Some(first) = receiver.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < max_batch {
                    match receiver.try_recv() {
                        Ok(job) => jobs.push(job),
                        Err(_) => break,
                    }
                }
                let items: Vec<T> = jobs.iter().map(|j| j.item.clone()).collect();
                match write(items).await {
                    Ok(results) if results.len() == jobs.len() => {
                        for (job, result) in jobs.into_iter().zip(results) {
                            let _ = job.reply.send(Ok(result));
                        }
                    }
                    _ if jobs.len() == 1 => {
                        // Nothing to isolate: run it once more for its own answer.
                        let job = jobs.remove(0);
                        let result = write(vec![job.item]).await.and_then(|mut r| r.pop().ok_or_else(|| Stopped.into()));
                        let _ = job.reply.send(result);
                    }
                    _ => {
                        for job in jobs {
                            let result = write(vec![job.item]).await.and_then(|mut r| r.pop().ok_or_else(|| Stopped.into()));
                            let _ = job.reply.send(result);
                        }
                    }
                }
            }
        });
        Self { sender }
    }

    /// Writes `item` with whatever else is waiting, and returns its result.
    pub async fn submit(&self, item: T) -> Result<R, E> {
        let (reply, answer) = oneshot::channel();
        self.sender.send(Job { item, reply }).await.map_err(|_| E::from(Stopped))?;
        answer.await.map_err(|_| E::from(Stopped))?
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[derive(Debug, PartialEq)]
    enum Failure {
        Bad(u32),
        Stopped,
    }

    impl From<Stopped> for Failure {
        fn from(_: Stopped) -> Self {
            Failure::Stopped
        }
    }

    #[tokio::test]
    async fn concurrent_items_are_written_together_and_answered_each() {
        let batches = Arc::new(AtomicUsize::new(0));
        let counted = batches.clone();
        let writer = Arc::new(GroupCommit::start(64, move |items: Vec<u32>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                Ok::<_, Failure>(items.into_iter().map(|i| i * 10).collect())
            }
        }));
        let answers = futures::future::join_all((0..40).map(|i| {
            let writer = writer.clone();
            async move { writer.submit(i).await }
        }))
        .await;
        assert_eq!(answers, (0..40).map(|i| Ok(i * 10)).collect::<Vec<_>>());
        assert!(batches.load(Ordering::SeqCst) < 40, "items were grouped: {} batches", batches.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn a_bad_item_fails_alone() {
        let writer = Arc::new(GroupCommit::start(64, |items: Vec<u32>| async move {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            match items.iter().find(|i| **i == 7) {
                Some(bad) => Err(Failure::Bad(*bad)),
                None => Ok(items),
            }
        }));
        let answers = futures::future::join_all((0..10).map(|i| {
            let writer = writer.clone();
            async move { writer.submit(i).await }
        }))
        .await;
        for (i, answer) in answers.into_iter().enumerate() {
            let i = i as u32;
            assert_eq!(answer, if i == 7 { Err(Failure::Bad(7)) } else { Ok(i) });
        }
    }
}
