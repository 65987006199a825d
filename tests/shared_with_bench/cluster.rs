//! A real ClickHouse cluster on one machine: one ZooKeeper (Debian's `zookeeper` package, run with a
//! config of its own on a free port) and three ClickHouse 18.16 servers that know each other:
//!
//! | node | macros `{shard}` / `{replica}` | cluster `replicated`      | cluster `sharded`          |
//! |------|--------------------------------|---------------------------|----------------------------|
//! | ch1  | `01` / `ch1`                   | shard 1, replica 1        | shard 1, replica 1         |
//! | ch2  | `01` / `ch2`                   | shard 1, replica 2        | shard 1, replica 2         |
//! | ch3  | `02` / `ch3`                   | —                         | shard 2 (its only replica) |
//!
//! Every shard has `internal_replication` on: a Distributed table writes each block to one replica and
//! the `Replicated*MergeTree` tables copy it to the others. `ON CLUSTER` DDL goes through ZooKeeper at
//! `/clickhouse/task_queue/ddl`. The watchdog of servers.rs stops every process and removes every file
//! once the process that started them exits.
//!
//! Included by path next to servers.rs (it uses `super::servers`).
#![allow(dead_code)]

use super::servers::{free_port, log_tail, tmpdir, watchdog, ClickHouse};
use anyhow::{bail, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// A standalone ZooKeeper server of its own.
pub struct ZooKeeper {
    pub port: u16,
    pub dir: PathBuf,
    pid: Mutex<Option<u32>>,
}

impl ZooKeeper {
    /// A server of its own (own directory, free port on 127.0.0.1), started and answering `ruok`.
    pub fn start() -> Result<ZooKeeper> {
        let dir = tmpdir("zk")?;
        let port = free_port();
        // forceSync=no: tests need no durability, and fsyncs would slow every DDL and insert.
        // tickTime bounds the session timeouts ZooKeeper grants (2 to 20 ticks): see SESSION_TIMEOUT_MS.
        std::fs::write(
            dir.join("zoo.cfg"),
            format!(
                "tickTime=1000\ninitLimit=10\nsyncLimit=5\ndataDir={d}/data\nclientPort={port}\n\
                 clientPortAddress=127.0.0.1\nmaxClientCnxns=0\nadmin.enableServer=false\n\
                 4lw.commands.whitelist=*\nforceSync=no\n",
                d = dir.display()
            ),
        )
        .context("write zoo.cfg")?;
        watchdog(
            &format!("kill -9 $(cat '{}/server.pid')", dir.display()),
            &dir,
        );
        let zk = ZooKeeper {
            port,
            dir,
            pid: Mutex::new(None),
        };
        zk.restart()?;
        Ok(zk)
    }

    /// Start the server (again, after `kill`: same port, same data) and wait until it answers `ruok`.
    pub fn restart(&self) -> Result<()> {
        // zookeeper.jar names its dependencies in its manifest's Class-Path; slf4j-simple (from the same
        // Debian package as the slf4j-api it needs) makes it log to stderr, i.e. to the log file.
        let mut classpath = format!("{}:/usr/share/java/zookeeper.jar", self.dir.display());
        if std::path::Path::new("/usr/share/java/slf4j-simple.jar").exists() {
            classpath.push_str(":/usr/share/java/slf4j-simple.jar");
        }
        let log_path = self.log();
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("create {}", log_path.display()))?;
        let child = Command::new("java")
            .args([
                "-Xmx256m",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Dzookeeper.admin.enableServer=false",
                "-Dorg.slf4j.simpleLogger.defaultLogLevel=info",
                "-cp",
                &classpath,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            ])
            .arg(self.dir.join("zoo.cfg"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start ZooKeeper with java (apt-get install zookeeper)")?;
        let pid = child.id();
        if let Ok(mut p) = self.pid.lock() {
            *p = Some(pid);
        }
        std::fs::write(self.dir.join("server.pid"), pid.to_string())?;
        let exited = std::sync::Arc::new(Mutex::new(None));
        let exit = exited.clone();
        std::thread::spawn(move || {
            let mut child = child;
            let status = child.wait();
            if let Ok(mut e) = exit.lock() {
                *e = Some(
                    status
                        .map(|s| s.to_string())
                        .unwrap_or_else(|e| e.to_string()),
                );
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.serving() {
            if let Some(status) = exited.lock().ok().and_then(|e| e.clone()) {
                if let Ok(mut p) = self.pid.lock() {
                    *p = None;
                }
                bail!(
                    "ZooKeeper exited while starting ({status}); log {}:\n{}",
                    log_path.display(),
                    log_tail(&log_path, 3000)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "ZooKeeper did not answer `ruok` and serve on 127.0.0.1:{} within 30 s; log {}:\n{}",
                    self.port,
                    log_path.display(),
                    log_tail(&log_path, 3000)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    }

    /// Whether it answers the `ruok` four-letter command with `imok`.
    pub fn ruok(&self) -> bool {
        self.four_letter("ruok").is_some_and(|a| a == "imok")
    }

    /// Whether it answers `ruok` and serves clients. `imok` alone comes a moment before the server
    /// accepts sessions (it drops their handshakes until then), and a ClickHouse 18.16 server whose
    /// first ZooKeeper connection failed that way crashes (SIGSEGV in its DDL worker) once asked for
    /// `ON CLUSTER` DDL; `srvr` names the mode only once it serves.
    pub fn serving(&self) -> bool {
        self.ruok()
            && self
                .four_letter("srvr")
                .is_some_and(|a| a.contains("Mode: "))
    }

    /// The answer to a four-letter command (`ruok`, `stat`, `mntr`, `cons`…), if it answers.
    pub fn four_letter(&self, cmd: &str) -> Option<String> {
        let addr = format!("127.0.0.1:{}", self.port).parse().ok()?;
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
        s.write_all(cmd.as_bytes()).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    }

    /// Stop it hard (kill -9).
    pub fn kill(&self) {
        let pid = self.pid.lock().ok().and_then(|mut p| p.take());
        if let Some(pid) = pid {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while self.ruok() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// The server's pid while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.pid.lock().ok().and_then(|p| *p)
    }

    /// Its log (stdout and stderr of the JVM).
    pub fn log(&self) -> PathBuf {
        self.dir.join("zookeeper.log")
    }
}

/// The session timeout the ClickHouse servers ask ZooKeeper for. A server restarted after `kill -9`
/// cannot take its replica back until its old session expires ("appears to be already active"), so
/// this bounds how long a restarted replica waits before it replicates again; ClickHouse's own default
/// (30 s) would make every node-restart test wait that long.
pub const SESSION_TIMEOUT_MS: u64 = 6000;

/// Three ClickHouse servers and the ZooKeeper they share (see the table at the top of this file).
pub struct ChCluster {
    zookeeper: ZooKeeper,
    nodes: Vec<ClickHouse>,
    started_in: Duration,
    /// Tests that stop nodes hold it exclusively; the others hold it shared (see `shared`).
    lock: RwLock<()>,
}

impl ChCluster {
    /// One shard (ch1 + ch2), both replicas of it.
    pub const REPLICATED: &'static str = "replicated";
    /// Two shards: shard 1 = ch1 + ch2 (replicas), shard 2 = ch3.
    pub const SHARDED: &'static str = "sharded";
    /// The nodes' names, which are also their `{replica}` macros; `node(i)` is `NODE_NAMES[i]`.
    pub const NODE_NAMES: [&'static str; 3] = ["ch1", "ch2", "ch3"];
    /// The nodes' `{shard}` macros.
    pub const NODE_SHARDS: [&'static str; 3] = ["01", "01", "02"];
    /// Where `ON CLUSTER` DDL queues its tasks in ZooKeeper.
    pub const DDL_PATH: &'static str = "/clickhouse/task_queue/ddl";

    /// ZooKeeper first (the servers connect to it as they start), then the three servers in parallel. A
    /// port picked free can be taken before a server binds it (by an outgoing connection of the servers
    /// themselves, which starting nodes make to ZooKeeper and each other): the whole cluster is then
    /// started again on new ports.
    pub fn start() -> Result<ChCluster> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match Self::start_once() {
                Err(e) if attempt < 3 && format!("{e:#}").contains("Address already in use") => {
                    eprintln!("harness: a port of the test cluster was taken while it started; again on new ports: {e:#}");
                }
                r => return r,
            }
        }
    }

    fn start_once() -> Result<ChCluster> {
        let t0 = Instant::now();
        let zookeeper = ZooKeeper::start()?;
        // Every config names every node's tcp port, so all ports are picked before any config is written.
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let replica = |i: usize| {
            format!(
                "<replica><host>127.0.0.1</host><port>{}</port></replica>",
                ports[i].1
            )
        };
        let remote_servers = format!(
            "<remote_servers>\n\
             <{replicated}><shard><internal_replication>true</internal_replication>{r1}{r2}</shard></{replicated}>\n\
             <{sharded}><shard><internal_replication>true</internal_replication>{r1}{r2}</shard>\
             <shard><internal_replication>true</internal_replication>{r3}</shard></{sharded}>\n\
             </remote_servers>",
            replicated = Self::REPLICATED,
            sharded = Self::SHARDED,
            r1 = replica(0),
            r2 = replica(1),
            r3 = replica(2),
        );
        let mut nodes = Vec::with_capacity(3);
        for (i, &(http, tcp, interserver)) in ports.iter().enumerate() {
            let extra = format!(
                "    <interserver_http_port>{interserver}</interserver_http_port>\n\
                 <interserver_http_host>127.0.0.1</interserver_http_host>\n\
                 {remote_servers}\n\
                 <zookeeper><node index=\"1\"><host>127.0.0.1</host><port>{zk}</port></node>\
                 <session_timeout_ms>{SESSION_TIMEOUT_MS}</session_timeout_ms></zookeeper>\n\
                 <macros><shard>{shard}</shard><replica>{name}</replica></macros>\n\
                 <distributed_ddl><path>{ddl}</path></distributed_ddl>",
                zk = zookeeper.port,
                shard = Self::NODE_SHARDS[i],
                name = Self::NODE_NAMES[i],
                ddl = Self::DDL_PATH,
            );
            nodes.push(ClickHouse::configure(
                &format!("ch-{}", Self::NODE_NAMES[i]),
                http,
                tcp,
                &extra,
            )?);
        }
        let started = std::thread::scope(|s| {
            let started: Vec<_> = nodes.iter().map(|n| s.spawn(|| n.start())).collect();
            for (i, h) in started.into_iter().enumerate() {
                match h.join() {
                    Ok(r) => r.with_context(|| format!("start {}", Self::NODE_NAMES[i]))?,
                    Err(_) => bail!("starting {} panicked", Self::NODE_NAMES[i]),
                }
            }
            Ok(())
        });
        if let Err(e) = started {
            nodes.iter().for_each(ClickHouse::kill);
            zookeeper.kill();
            return Err(e);
        }
        Ok(ChCluster {
            zookeeper,
            nodes,
            started_in: t0.elapsed(),
            lock: RwLock::new(()),
        })
    }

    /// ch1, ch2, ch3.
    pub fn nodes(&self) -> &[ClickHouse] {
        &self.nodes
    }

    /// Node `i` (0-based: `node(0)` is ch1). Panics when `i` > 2.
    pub fn node(&self, i: usize) -> &ClickHouse {
        &self.nodes[i]
    }

    pub fn zookeeper(&self) -> &ZooKeeper {
        &self.zookeeper
    }

    pub fn zookeeper_port(&self) -> u16 {
        self.zookeeper.port
    }

    /// How long `start` took (ZooKeeper and the three servers answering).
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// For a test that needs every node up: waits while a test holding `exclusive` runs, and first
    /// restarts any node such a test left down (e.g. after it failed half-way).
    /// Also restarts a node that no longer runs `ON CLUSTER` DDL (see `repair_ddl`).
    pub async fn shared(&self) -> Result<RwLockReadGuard<'_, ()>> {
        let guard = self.lock.read().await;
        if self.all_up() && self.ddl_laggards().await?.is_empty() {
            return Ok(guard);
        }
        drop(guard);
        let guard = self.lock.write().await;
        self.restart_stopped()?;
        self.repair_ddl().await?;
        Ok(RwLockWriteGuard::downgrade(guard))
    }

    /// For a test that stops nodes: waits until no other cluster test runs, restarts any node left down,
    /// and keeps the others out until the guard is dropped. Restart what you stop before dropping it.
    pub async fn exclusive(&self) -> Result<RwLockWriteGuard<'_, ()>> {
        let guard = self.lock.write().await;
        self.restart_stopped()?;
        self.repair_ddl().await?;
        Ok(guard)
    }

    /// An 18.16 server can stop running `ON CLUSTER` DDL for good while it still answers queries (its
    /// DDL worker thread ends on an unexpected ZooKeeper error): every later DDL then waits out its
    /// timeout with "N unfinished hosts (0 of them are currently active)". Seen about once in twenty runs
    /// on a loaded 2-core machine; a test would fail on the harness, not on waltrail. Restarting such a
    /// node starts its worker again (it then runs the queued tasks).
    /// Public for a test that already holds `shared` or `exclusive` and sees `ON CLUSTER` DDL stall after
    /// that guard's own check (CI met it once: waltrail's migration waited on a node whose DDL worker
    /// had died between the harness's probe and the migration).
    pub async fn repair_ddl(&self) -> Result<()> {
        for _ in 0..2 {
            let lagging = self.ddl_laggards().await?;
            if lagging.is_empty() {
                return Ok(());
            }
            for i in lagging {
                eprintln!(
                    "harness: {} ran no ON CLUSTER DDL for 20 s; restarting it",
                    Self::NODE_NAMES[i]
                );
                self.nodes[i].kill();
                self.nodes[i]
                    .start()
                    .with_context(|| format!("restart {}", Self::NODE_NAMES[i]))?;
            }
        }
        let lagging = self.ddl_laggards().await?;
        if lagging.is_empty() {
            return Ok(());
        }
        bail!(
            "cluster nodes {:?} run no ON CLUSTER DDL even after a restart; see their error.log",
            lagging
                .iter()
                .map(|&i| Self::NODE_NAMES[i])
                .collect::<Vec<_>>()
        )
    }

    /// The nodes that did not run a no-op `ON CLUSTER` DDL within 20 s (none when all did).
    async fn ddl_laggards(&self) -> Result<Vec<usize>> {
        let ch = self.nodes[0].client("default");
        // A node restarted by an earlier test may not answer HTTP yet (CI once met "network error: client
        // error (SendRequest)" here): connection errors are waited out for up to 10 s.
        let mut tries = 0;
        let err = loop {
            let err = match ch
                .query(&format!(
                    "CREATE DATABASE IF NOT EXISTS harness_ddl_probe ON CLUSTER {}",
                    Self::SHARDED
                ))
                .with_setting("distributed_ddl_task_timeout", "20")
                .with_setting("wait_end_of_query", "1")
                .execute()
                .await
            {
                Ok(()) => return Ok(Vec::new()),
                Err(e) => e.to_string(),
            };
            tries += 1;
            if !err.contains("network error") || tries >= 20 {
                break err;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        if !err.contains("unfinished hosts") {
            bail!("ON CLUSTER DDL probe: {err}");
        }
        // "Watching task /clickhouse/task_queue/ddl/query-0000000012 is executing longer than …": the
        // task's `finished` node lists the hosts that ran it, as `host:tcp_port`.
        let task = err
            .split_whitespace()
            .find(|w| w.starts_with(Self::DDL_PATH))
            .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()));
        let finished: Vec<String> = match task {
            Some(t) => ch
                .query("SELECT name FROM system.zookeeper WHERE path = ?")
                .bind(format!("{t}/finished"))
                .fetch_all::<String>()
                .await
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let lagging: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                let port = format!(":{}", self.nodes[i].tcp_port);
                !finished.iter().any(|f| f.ends_with(&port))
            })
            .collect();
        Ok(lagging)
    }

    /// Whether every node (and ZooKeeper) runs, as far as this process stopped none of them.
    pub fn all_up(&self) -> bool {
        self.zookeeper.pid().is_some() && self.nodes.iter().all(|n| n.pid().is_some())
    }

    /// Start again whatever was killed (blocking; ZooKeeper first).
    pub fn restart_stopped(&self) -> Result<()> {
        if self.zookeeper.pid().is_none() {
            self.zookeeper.restart()?;
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.pid().is_none() {
                n.start()
                    .with_context(|| format!("restart {}", Self::NODE_NAMES[i]))?;
            }
        }
        Ok(())
    }
}
