//! What the chat bot reads and keeps: the builders' last builds, recent
//! changes, each chat's notification events and long button payloads.

use std::collections::{BTreeMap, BTreeSet};

use rusqlite::OptionalExtension;

use super::{Db, Error};
use crate::changes::Change;
use crate::results::Results;

/// A builder's newest complete build.
#[derive(Debug, Clone, PartialEq)]
pub struct LastBuild {
    pub number: i64,
    pub results: Option<Results>,
    pub complete_at: Option<i64>,
    pub state_string: String,
}

impl Db {
    /// The newest complete build of each of `builderids` that has one.
    pub async fn last_builds(
        &self,
        builderids: Vec<i64>,
    ) -> Result<BTreeMap<i64, LastBuild>, Error> {
        self.read(move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT number, results, complete_at, state_string FROM builds
                 WHERE builderid = ?1 AND complete_at IS NOT NULL
                 ORDER BY number DESC LIMIT 1",
            )?;
            let mut last = BTreeMap::new();
            for builderid in builderids {
                let row = select
                    .query_row([builderid], |row| {
                        Ok(LastBuild {
                            number: row.get(0)?,
                            results: row.get::<_, Option<i64>>(1)?.and_then(Results::from_code),
                            complete_at: row.get(2)?,
                            state_string: row.get(3)?,
                        })
                    })
                    .optional()?;
                if let Some(build) = row {
                    last.insert(builderid, build);
                }
            }
            Ok(last)
        })
        .await
    }

    /// The state of the first unfinished step of each of `buildids` that
    /// has one.
    pub async fn current_steps(&self, buildids: Vec<i64>) -> Result<BTreeMap<i64, String>, Error> {
        self.read(move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT state_string FROM steps WHERE buildid = ?1 AND complete_at IS NULL
                 ORDER BY number LIMIT 1",
            )?;
            let mut steps = BTreeMap::new();
            for buildid in buildids {
                if let Some(state) = select
                    .query_row([buildid], |row| row.get::<_, String>(0))
                    .optional()?
                {
                    steps.insert(buildid, state);
                }
            }
            Ok(steps)
        })
        .await
    }

    /// How many changes are stored, and the newest `limit` of them, oldest
    /// first.
    pub async fn recent_changes(&self, limit: u64) -> Result<(u64, Vec<Change>), Error> {
        let (count, ids) = self
            .read(move |conn| {
                let count: i64 =
                    conn.query_row("SELECT COUNT(*) FROM changes", [], |r| r.get(0))?;
                let mut select = conn.prepare_cached(
                    "SELECT changeid FROM changes ORDER BY changeid DESC LIMIT ?1",
                )?;
                let ids = select
                    .query_map([limit as i64], |row| row.get::<_, i64>(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((count as u64, ids))
            })
            .await?;
        Ok((count, self.changes_by_id(ids).await?))
    }

    /// Bot `bot`'s chats with the events each is notified of.
    pub async fn chat_subscriptions(
        &self,
        bot: i64,
    ) -> Result<BTreeMap<i64, BTreeSet<String>>, Error> {
        self.read(move |conn| {
            let mut select = conn
                .prepare_cached("SELECT chat_id, events FROM chat_subscriptions WHERE bot = ?1")?;
            let rows = select.query_map([bot], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?))
            })?;
            let mut chats = BTreeMap::new();
            for row in rows {
                let (chat, events) = row?;
                chats.insert(chat, serde_json::from_str(&events).unwrap_or_default());
            }
            Ok(chats)
        })
        .await
    }

    /// Forgets everything about `chat`: its events and missing workers.
    pub async fn forget_chat(&self, bot: i64, chat: i64) -> Result<(), Error> {
        self.transact(move |conn| {
            conn.execute(
                "DELETE FROM chat_subscriptions WHERE bot = ?1 AND chat_id = ?2",
                (bot, chat),
            )?;
            conn.execute(
                "DELETE FROM chat_missing_workers WHERE bot = ?1 AND chat_id = ?2",
                (bot, chat),
            )?;
            Ok(())
        })
        .await
    }

    /// Records the events of `chat`; no events forgets the chat.
    pub async fn save_chat_subscription(
        &self,
        bot: i64,
        chat: i64,
        events: BTreeSet<String>,
    ) -> Result<(), Error> {
        self.transact(move |conn| {
            if events.is_empty() {
                conn.execute(
                    "DELETE FROM chat_subscriptions WHERE bot = ?1 AND chat_id = ?2",
                    (bot, chat),
                )?;
            } else {
                let events = serde_json::to_string(&events).unwrap_or_default();
                conn.execute(
                    "INSERT INTO chat_subscriptions (bot, chat_id, events) VALUES (?1, ?2, ?3)
                     ON CONFLICT (bot, chat_id) DO UPDATE SET events = excluded.events",
                    (bot, chat, events),
                )?;
            }
            Ok(())
        })
        .await
    }

    /// Moves chat `from`'s events to chat `to` (a group that became a
    /// supergroup), merged with any `to` has.
    pub async fn move_chat(&self, bot: i64, from: i64, to: i64) -> Result<(), Error> {
        self.transact(move |conn| {
            let moved: Option<String> = conn
                .query_row(
                    "DELETE FROM chat_subscriptions WHERE bot = ?1 AND chat_id = ?2 RETURNING events",
                    (bot, from),
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(moved) = moved {
                let existing: Option<String> = conn
                    .query_row(
                        "SELECT events FROM chat_subscriptions WHERE bot = ?1 AND chat_id = ?2",
                        (bot, to),
                        |row| row.get(0),
                    )
                    .optional()?;
                let mut events: BTreeSet<String> = serde_json::from_str(&moved).unwrap_or_default();
                if let Some(existing) = existing {
                    events.extend(serde_json::from_str::<BTreeSet<String>>(&existing).unwrap_or_default());
                }
                conn.execute(
                    "INSERT OR REPLACE INTO chat_subscriptions (bot, chat_id, events) VALUES (?1, ?2, ?3)",
                    (bot, to, serde_json::to_string(&events).unwrap_or_default()),
                )?;
            }
            conn.execute(
                "UPDATE OR IGNORE chat_missing_workers SET chat_id = ?3 WHERE bot = ?1 AND chat_id = ?2",
                (bot, from, to),
            )?;
            conn.execute(
                "DELETE FROM chat_missing_workers WHERE bot = ?1 AND chat_id = ?2",
                (bot, from),
            )?;
            Ok(())
        })
        .await
    }

    /// Bot `bot`'s chats with the workers each was told are missing.
    pub async fn chat_missing_workers(
        &self,
        bot: i64,
    ) -> Result<BTreeMap<i64, BTreeSet<i64>>, Error> {
        self.read(move |conn| {
            let mut select = conn.prepare_cached(
                "SELECT chat_id, workerid FROM chat_missing_workers WHERE bot = ?1",
            )?;
            let rows = select.query_map([bot], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
            })?;
            let mut chats: BTreeMap<i64, BTreeSet<i64>> = BTreeMap::new();
            for row in rows {
                let (chat, worker) = row?;
                chats.entry(chat).or_default().insert(worker);
            }
            Ok(chats)
        })
        .await
    }

    /// Records whether `chat` was told worker `workerid` is missing.
    pub async fn set_chat_missing_worker(
        &self,
        bot: i64,
        chat: i64,
        workerid: i64,
        missing: bool,
    ) -> Result<(), Error> {
        self.transact(move |conn| {
            if missing {
                conn.execute(
                    "INSERT OR IGNORE INTO chat_missing_workers (bot, chat_id, workerid) VALUES (?1, ?2, ?3)",
                    (bot, chat, workerid),
                )?;
            } else {
                conn.execute(
                    "DELETE FROM chat_missing_workers WHERE bot = ?1 AND chat_id = ?2 AND workerid = ?3",
                    (bot, chat, workerid),
                )?;
            }
            Ok(())
        })
        .await
    }

    /// The next update bot `bot` asks for; 0 when none is stored.
    pub async fn chat_offset(&self, bot: i64) -> Result<i64, Error> {
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT next_update FROM chat_offsets WHERE bot = ?1",
                    [bot],
                    |row| row.get(0),
                )
                .optional()?
                .unwrap_or(0))
        })
        .await
    }

    /// Records the next update bot `bot` asks for.
    pub async fn save_chat_offset(&self, bot: i64, next_update: i64) -> Result<(), Error> {
        self.transact(move |conn| {
            conn.execute(
                "INSERT INTO chat_offsets (bot, next_update) VALUES (?1, ?2)
                 ON CONFLICT (bot) DO UPDATE SET next_update = excluded.next_update",
                (bot, next_update),
            )?;
            Ok(())
        })
        .await
    }

    /// The id of a long button payload, stored once.
    pub async fn button_id(&self, bot: i64, payload: String) -> Result<i64, Error> {
        self.transact(move |conn| {
            conn.execute(
                "INSERT INTO chat_buttons (bot, payload, created_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (bot, payload) DO UPDATE SET created_at = excluded.created_at",
                (bot, &payload, super::now()),
            )?;
            Ok(conn.query_row(
                "SELECT id FROM chat_buttons WHERE bot = ?1 AND payload = ?2",
                (bot, &payload),
                |row| row.get(0),
            )?)
        })
        .await
    }

    /// The payload of button `id`, unless it is unknown or older than
    /// `created_after` (epoch seconds).
    pub async fn button_payload(
        &self,
        bot: i64,
        id: i64,
        created_after: i64,
    ) -> Result<Option<String>, Error> {
        self.read(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT payload FROM chat_buttons WHERE bot = ?1 AND id = ?2 AND created_at > ?3",
                    (bot, id, created_after),
                    |row| row.get(0),
                )
                .optional()?)
        })
        .await
    }

    /// Forgets button payloads made before `before` (epoch seconds).
    pub async fn purge_buttons(&self, before: i64) -> Result<usize, Error> {
        self.transact(move |conn| {
            Ok(conn.execute("DELETE FROM chat_buttons WHERE created_at < ?1", [before])?)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[tokio::test]
    async fn subscriptions_are_kept_per_bot_moved_and_forgotten() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        db.save_chat_subscription(1, -100, events(&["started"]))
            .await
            .unwrap();
        db.save_chat_subscription(1, -200, events(&["failure"]))
            .await
            .unwrap();
        db.save_chat_subscription(2, -100, events(&["worker"]))
            .await
            .unwrap();
        db.move_chat(1, -100, -200).await.unwrap();
        let chats = db.chat_subscriptions(1).await.unwrap();
        assert_eq!(chats.len(), 1);
        assert_eq!(chats[&-200], events(&["failure", "started"]));
        db.save_chat_subscription(1, -200, BTreeSet::new())
            .await
            .unwrap();
        assert!(db.chat_subscriptions(1).await.unwrap().is_empty());
        assert_eq!(
            db.chat_subscriptions(2).await.unwrap()[&-100],
            events(&["worker"])
        );
    }

    #[tokio::test]
    async fn a_button_payload_is_stored_once_and_expires() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        let long = "/force force1 ask reason builder1 branch=master".repeat(2);
        let id = db.button_id(1, long.clone()).await.unwrap();
        assert_eq!(db.button_id(1, long.clone()).await.unwrap(), id);
        assert_eq!(db.button_payload(1, id, 0).await.unwrap(), Some(long));
        assert_eq!(db.button_payload(2, id, 0).await.unwrap(), None);
        assert_eq!(db.button_payload(1, id, i64::MAX).await.unwrap(), None);
        assert_eq!(db.purge_buttons(i64::MAX).await.unwrap(), 1);
    }

    #[tokio::test]
    async fn missing_workers_are_kept_per_chat() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        db.set_chat_missing_worker(1, -100, 7, true).await.unwrap();
        db.set_chat_missing_worker(1, -100, 7, true).await.unwrap();
        db.set_chat_missing_worker(1, -200, 8, true).await.unwrap();
        db.set_chat_missing_worker(1, -200, 8, false).await.unwrap();
        let missing = db.chat_missing_workers(1).await.unwrap();
        assert_eq!(missing.len(), 1);
        assert_eq!(missing[&-100], BTreeSet::from([7]));
        assert!(db.chat_missing_workers(2).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn each_bot_keeps_its_update_offset() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite")).unwrap();
        assert_eq!(db.chat_offset(1).await.unwrap(), 0);
        db.save_chat_offset(1, 10_001).await.unwrap();
        db.save_chat_offset(1, 10_005).await.unwrap();
        assert_eq!(db.chat_offset(1).await.unwrap(), 10_005);
        assert_eq!(db.chat_offset(2).await.unwrap(), 0);
    }
}
