//! redis remotes: one key (`rcache:<key>`) per entry, set with an expiry
//! when the URL asks for one (`redis://host:6379/0?ttl=7d`), so a redis
//! without `maxmemory-policy` eviction does not grow for ever.
//! Connections are opened as fetch threads need them and kept for reuse.

use std::sync::Mutex;
use std::time::Duration;

use super::Backend;
use crate::key::Key;

pub struct Redis {
    client: redis::Client,
    ttl: Option<Duration>,
    timeout: Duration,
    /// Connections not in use by a thread right now.
    idle: Mutex<Vec<redis::Connection>>,
}

impl Redis {
    pub fn new(url: &url::Url, ttl: Option<Duration>, timeout: Duration) -> Result<Self, String> {
        let client = redis::Client::open(url.as_str()).map_err(|err| describe(&err))?;
        Ok(Self {
            client,
            ttl,
            timeout,
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Runs `command` on an idle connection (or a new one), keeping the
    /// connection when it worked.
    fn run<T: redis::FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, String> {
        let idle = self.idle.lock().expect("no panics holding the lock").pop();
        let mut connection = match idle {
            Some(connection) => connection,
            None => self.connect()?,
        };
        let result = command
            .query(&mut connection)
            .map_err(|err| describe(&err))?;
        self.idle
            .lock()
            .expect("no panics holding the lock")
            .push(connection);
        Ok(result)
    }

    fn connect(&self) -> Result<redis::Connection, String> {
        let connection = self
            .client
            .get_connection_with_timeout(self.timeout)
            .map_err(|err| describe(&err))?;
        for set in [
            redis::Connection::set_read_timeout,
            redis::Connection::set_write_timeout,
        ] {
            set(&connection, Some(self.timeout)).map_err(|err| describe(&err))?;
        }
        Ok(connection)
    }
}

impl Backend for Redis {
    fn get(&self, key: &Key) -> Result<Option<Vec<u8>>, String> {
        self.run(redis::cmd("GET").arg(name(key)))
    }

    fn put(&self, key: &Key, object: &[u8]) -> Result<(), String> {
        let mut command = redis::cmd("SET");
        command.arg(name(key)).arg(object);
        if let Some(ttl) = self.ttl {
            command.arg("EX").arg(ttl.as_secs());
        }
        self.run(&command)
    }

    fn has(&self, key: &Key) -> Result<bool, String> {
        self.run(redis::cmd("EXISTS").arg(name(key)))
    }
}

fn name(key: &Key) -> String {
    format!("rcache:{}", key.to_hex())
}

/// The error without anything from the URL (redis errors never carry the
/// password, but say what failed).
fn describe(err: &redis::RedisError) -> String {
    if err.is_timeout() {
        "timed out".to_owned()
    } else if err.is_connection_refusal() {
        "connection refused".to_owned()
    } else {
        err.to_string()
    }
}
