//! Crash consistency of the barrier over the redb backend, and over DynamoDB on moto's server
//! (feature `dynamodb`; a store is a namespace of one table there), with real `SIGKILL`s.
//!
//! The test runs itself twice over. In **parent** mode (the default, what `cargo test` runs) it
//! creates one store and, round after round, starts this same executable as a **child** on it
//! (`ARCA_CRASH_CHILD=<dir>`), reads the child's acknowledgements from its stdout, and kills it
//! with `SIGKILL` at a random moment: before it has even opened the store, right after it
//! unsealed, or after a random number of acknowledged writes. Before those rounds, a few new
//! stores are killed while their file is being created. After each kill the parent reopens the
//! store itself and checks what a crash may and may not do:
//!
//! - the store opens (a crash while creating it included) and unseals;
//! - every acknowledged write is there (or, for an acknowledged delete, is gone), with exactly
//!   the bytes that were written;
//! - every batch, acknowledged or not, is wholly present or wholly absent;
//! - every record in the store authenticates and holds a value some writer really wrote:
//!   nothing is half-written.
//!
//! The child writes from many concurrent tokio tasks (so the redb writer commits them in
//! groups), mixes single puts, overwrites, deletes and batches, and in some rounds rotates the
//! keyring and rewraps old records while it writes. Every key says what kind of write made it
//! and every value is derived from its key, so the parent can judge any record it finds.
//!
//! A failure prints the seed; `ARCA_CRASH_SEED=<seed>` replays the same workloads and kill
//! points (thread timing still varies). `ARCA_CRASH_ROUNDS` changes the number of rounds.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arca_storage::{Backend, Barrier, BarrierOp, RedbBackend, RootKey};

#[cfg(feature = "dynamodb")]
mod support;

/// Set in the child's environment to the store's folder.
const CHILD_ENV: &str = "ARCA_CRASH_CHILD";
/// The root key, hex-encoded (test data made from the seed).
const KEY_ENV: &str = "ARCA_CRASH_ROOT_KEY";
/// The child's round number, which prefixes every key it writes.
const ROUND_ENV: &str = "ARCA_CRASH_ROUND";
/// The seed of the child's workload.
const CHILD_SEED_ENV: &str = "ARCA_CRASH_CHILD_SEED";
/// Replays a run.
const SEED_ENV: &str = "ARCA_CRASH_SEED";
/// Overrides the number of rounds.
const ROUNDS_ENV: &str = "ARCA_CRASH_ROUNDS";

const DEFAULT_ROUNDS: u32 = 24;
/// Rounds over DynamoDB: every request is a round trip to moto, so fewer.
#[cfg(feature = "dynamodb")]
const DYNAMODB_ROUNDS: u32 = 8;
/// Set in the child's environment to the store kind: `redb`, or moto's endpoint.
const STORE_ENV: &str = "ARCA_CRASH_STORE";
/// Concurrent writer tasks in a child.
const TASKS: u64 = 16;
/// Operations per writer task.
const OPS_PER_TASK: u64 = 40;
/// Values an overwritten key goes through, generation 0 first.
const GENERATIONS: u32 = 3;
/// How long the parent waits for the next line from a child before calling it stuck.
const LINE_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the stores live.
#[derive(Debug, Clone)]
enum Store {
    /// A redb file in the store's folder.
    Redb,
    /// The namespace of the store's folder in the shared table of moto's server here.
    #[cfg(feature = "dynamodb")]
    DynamoDb(String),
}

impl Store {
    fn from_env() -> Result<Self, String> {
        match std::env::var(STORE_ENV).as_deref() {
            Ok("redb") | Err(_) => Ok(Self::Redb),
            #[cfg(feature = "dynamodb")]
            Ok(endpoint) => Ok(Self::DynamoDb(endpoint.to_owned())),
            #[cfg(not(feature = "dynamodb"))]
            Ok(other) => Err(format!("unknown store {other:?}")),
        }
    }

    fn env_value(&self) -> &str {
        match self {
            Self::Redb => "redb",
            #[cfg(feature = "dynamodb")]
            Self::DynamoDb(endpoint) => endpoint,
        }
    }

    fn open(&self, dir: &Path) -> Result<Arc<dyn Backend>, String> {
        match self {
            Self::Redb => RedbBackend::open(store_file(dir))
                .map(|b| Arc::new(b) as Arc<dyn Backend>)
                .map_err(|e| chain(&e)),
            #[cfg(feature = "dynamodb")]
            Self::DynamoDb(endpoint) => arca_storage::DynamoDbBackend::with_client(
                support::client(endpoint),
                support::TABLE,
                &support::namespace_for(dir),
            )
            .map(|b| Arc::new(b) as Arc<dyn Backend>)
            .map_err(|e| chain(&e)),
        }
    }
}

fn main() -> ExitCode {
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        return match child(Path::new(&dir)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                eprintln!("crash consistency child: {err}");
                ExitCode::FAILURE
            }
        };
    }
    let seed = std::env::var(SEED_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(time_seed);
    let rounds = std::env::var(ROUNDS_ENV)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_ROUNDS);
    #[cfg_attr(not(feature = "dynamodb"), allow(unused_mut))]
    let mut stores = vec![(Store::Redb, rounds, FIRST_OPEN_TRIALS)];
    #[cfg(feature = "dynamodb")]
    stores.push((
        Store::DynamoDb(support::moto().to_owned()),
        rounds.min(DYNAMODB_ROUNDS),
        2,
    ));
    for (store, rounds, first_open_trials) in stores {
        match parent(seed, rounds, first_open_trials, &store) {
            Ok(verified) => println!(
                "crash consistency ({}): {rounds} rounds, {verified} acknowledged writes verified",
                store_name(&store)
            ),
            Err(failure) => {
                eprintln!(
                    "crash consistency ({}) FAILED: {failure}",
                    store_name(&store)
                );
                eprintln!("replay with {SEED_ENV}={seed}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}

fn store_name(store: &Store) -> &'static str {
    match store {
        Store::Redb => "redb",
        #[cfg(feature = "dynamodb")]
        Store::DynamoDb(_) => "DynamoDB on moto",
    }
}

// ---------------------------------------------------------------------------------------------
// Randomness and the workload's vocabulary, shared by parent and child.

/// xorshift64*: plenty for choosing kill points and value lengths.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Mix the seed (splitmix64) so that nearby seeds give unrelated streams; never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Self((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform enough in `0..n` for a test (`n` > 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn time_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() ^ u64::from(d.subsec_nanos()))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

/// The value generation `generation` of `key` holds: its key and generation, then bytes drawn
/// from both, of a length that is mostly small, sometimes empty (single puts only), sometimes
/// large enough to span many pages.
fn expected_value(key: &str, generation: u32) -> Vec<u8> {
    let mut rng = Rng::new(fnv1a(key.as_bytes()) ^ u64::from(generation));
    let len = match rng.below(100) {
        0 if generation == 0 && key.contains("/s") => return Vec::new(),
        1 => 32 * 1024 + rng.below(32 * 1024),
        _ => rng.below(2048),
    };
    let mut value = format!("{key}#{generation}#").into_bytes();
    for _ in 0..len {
        value.push(rng.next().to_le_bytes()[0]);
    }
    value
}

/// What a key's name says about the writes that can have made it.
///
/// Keys are `r<round>/t<task>/<kind>`: `s<i>` a single put, `o<i>` an overwrite chain of
/// [`GENERATIONS`] puts, `d<i>` a put followed by a delete, and `b<i>n<n>/<j>` member `j` of a
/// batch of `n` puts.
#[derive(Debug, PartialEq, Eq)]
enum KeyKind {
    Single,
    Overwritten,
    Deleted,
    BatchMember { batch: String, n: usize, j: usize },
}

fn parse_key(key: &str) -> Option<KeyKind> {
    let parts: Vec<&str> = key.split('/').collect();
    let numeric = |s: &str, tag: char| {
        s.strip_prefix(tag)
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    };
    if parts.len() < 3 || !numeric(parts[0], 'r') || !numeric(parts[1], 't') {
        return None;
    }
    match parts.as_slice() {
        [_, _, s] if numeric(s, 's') => Some(KeyKind::Single),
        [_, _, o] if numeric(o, 'o') => Some(KeyKind::Overwritten),
        [_, _, d] if numeric(d, 'd') => Some(KeyKind::Deleted),
        [_, _, b, j] => {
            let (i, n) = b.strip_prefix('b')?.split_once('n')?;
            i.parse::<u64>().ok()?;
            let n: usize = n.parse().ok()?;
            let j: usize = j.parse().ok()?;
            (j < n).then(|| KeyKind::BatchMember {
                batch: key[..key.len() - parts[3].len() - 1].to_owned(),
                n,
                j,
            })
        }
        _ => None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// An error and its sources, one after another.
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(next) = source {
        text = format!("{text}: {next}");
        source = next.source();
    }
    text
}

fn store_file(dir: &Path) -> PathBuf {
    dir.join("arca.redb")
}

// ---------------------------------------------------------------------------------------------
// The child: writes until it is killed.

fn child(dir: &Path) -> Result<(), String> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let key = unhex(&var(KEY_ENV)?).ok_or("the root key is not hex")?;
    let root = RootKey::from_slice(&key).map_err(|e| e.to_string())?;
    let round: u64 = var(ROUND_ENV)?.parse().map_err(|_| "bad round")?;
    let seed: u64 = var(CHILD_SEED_ENV)?.parse().map_err(|_| "bad seed")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(child_writes(dir, &root, round, seed))
}

/// Prints one line and flushes it, so the parent knows of an acknowledgement at once.
fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    writeln!(out, "{line}").unwrap();
    out.flush().unwrap();
}

async fn child_writes(dir: &Path, root: &RootKey, round: u64, seed: u64) -> Result<(), String> {
    say("opening");
    let backend = Store::from_env()?
        .open(dir)
        .map_err(|e| format!("open: {e}"))?;
    let barrier = Arc::new(Barrier::new(backend));
    if !barrier.is_initialized().await.map_err(|e| e.to_string())? {
        barrier
            .initialize(root)
            .await
            .map_err(|e| format!("initialize: {e}"))?;
    }
    barrier
        .unseal(root)
        .await
        .map_err(|e| format!("unseal: {e}"))?;
    say("ready");

    let mut rng = Rng::new(seed);
    // In some rounds the keyring turns over and older records are rewrapped while the writers
    // run, so a kill can land in the middle of either.
    let rewrap = if rng.below(3) == 0 {
        let term = barrier.rotate().await.map_err(|e| format!("rotate: {e}"))?;
        say(&format!("rotated {term}"));
        Some(barrier.spawn_rewrap())
    } else {
        None
    };

    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let barrier = Arc::clone(&barrier);
        let task_seed = rng.next();
        tasks.push(tokio::spawn(async move {
            writer(&barrier, round, t, task_seed).await
        }));
    }
    for task in tasks {
        task.await.map_err(|e| e.to_string())??;
    }
    if let Some(rewrap) = rewrap {
        rewrap
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| format!("rewrap: {e}"))?;
    }
    barrier.seal().await;
    say("done");
    Ok(())
}

async fn writer(barrier: &Barrier, round: u64, task: u64, seed: u64) -> Result<(), String> {
    let mut rng = Rng::new(seed);
    let fail = |what: &str, key: &str, e: &dyn std::fmt::Display| format!("{what} {key}: {e}");
    for i in 0..OPS_PER_TASK {
        let base = format!("r{round}/t{task}");
        match rng.below(20) {
            0..=10 => {
                let key = format!("{base}/s{i}");
                let value = expected_value(&key, 0);
                barrier
                    .put(&key, &value)
                    .await
                    .map_err(|e| fail("put", &key, &e))?;
                say(&format!("put {key}"));
            }
            11..=13 => {
                let key = format!("{base}/o{i}");
                for generation in 0..GENERATIONS {
                    let value = expected_value(&key, generation);
                    barrier
                        .put(&key, &value)
                        .await
                        .map_err(|e| fail("overwrite", &key, &e))?;
                    say(&format!("overwrite {key} {generation}"));
                }
            }
            14..=15 => {
                let key = format!("{base}/d{i}");
                barrier
                    .put(&key, &expected_value(&key, 0))
                    .await
                    .map_err(|e| fail("put", &key, &e))?;
                say(&format!("put {key}"));
                barrier
                    .delete(&key)
                    .await
                    .map_err(|e| fail("delete", &key, &e))?;
                say(&format!("delete {key}"));
            }
            _ => {
                let n = 2 + rng.below(7);
                let batch = format!("{base}/b{i}n{n}");
                let members: Vec<(String, Vec<u8>)> = (0..n)
                    .map(|j| {
                        let key = format!("{batch}/{j}");
                        let value = expected_value(&key, 0);
                        (key, value)
                    })
                    .collect();
                let ops: Vec<BarrierOp<'_>> =
                    members.iter().map(|(k, v)| BarrierOp::Put(k, v)).collect();
                barrier
                    .batch(&ops)
                    .await
                    .map_err(|e| fail("batch", &batch, &e))?;
                say(&format!("batch {batch}"));
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The parent: kills children and checks what they leave behind.

/// What the acknowledgements seen so far promise about one key (or one batch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Promise {
    /// Present, holding generation `min_generation` or a later one.
    Present { min_generation: u32 },
    /// Written once; its delete may have been applied without being acknowledged.
    PresentUnlessDeleted,
    /// Deleted.
    Absent,
    /// Every member of the batch is present.
    WholeBatch,
}

#[derive(Default)]
struct Promises {
    by_key: BTreeMap<String, Promise>,
    acknowledged: usize,
}

impl Promises {
    fn record(&mut self, line: &str) -> Result<(), String> {
        let words: Vec<&str> = line.split(' ').collect();
        let promise = match words.as_slice() {
            ["opening" | "ready" | "done"] | ["rotated", _] => return Ok(()),
            ["put", key] => match parse_key(key) {
                Some(KeyKind::Single) => (*key, Promise::Present { min_generation: 0 }),
                Some(KeyKind::Deleted) => (*key, Promise::PresentUnlessDeleted),
                _ => return Err(format!("acknowledged put of an unexpected key: {line}")),
            },
            ["overwrite", key, generation] => {
                let min_generation = generation.parse().map_err(|_| line.to_owned())?;
                (*key, Promise::Present { min_generation })
            }
            ["delete", key] => (*key, Promise::Absent),
            ["batch", batch] => (*batch, Promise::WholeBatch),
            _ => return Err(format!("unexpected line from the child: {line:?}")),
        };
        self.by_key.insert(promise.0.to_owned(), promise.1);
        self.acknowledged += 1;
        Ok(())
    }
}

/// How a round ends.
#[derive(Debug, Clone, Copy)]
enum KillPoint {
    /// After this long, without waiting for the child to say anything: it may not have opened
    /// the store yet, or be in the middle of creating or initializing it.
    Blind(Duration),
    /// This long after the child said it is about to open the store: for a new store, in the
    /// middle of creating the file.
    WhileOpening(Duration),
    /// As soon as the child has unsealed, before any write is acknowledged.
    AfterReady,
    /// After this many acknowledged writes, then a pause of up to a millisecond.
    AfterAcks(usize, Duration),
}

impl KillPoint {
    fn draw(rng: &mut Rng, round: u32) -> Self {
        let pause = Duration::from_micros(rng.below(1000));
        match (round, rng.below(10)) {
            (0, _) | (_, 0) => Self::Blind(Duration::from_micros(rng.below(60_000))),
            (1, _) | (_, 1) => Self::AfterReady,
            (_, 2..=4) => Self::AfterAcks(1 + rng.below(20) as usize, pause),
            _ => Self::AfterAcks(1 + rng.below(300) as usize, pause),
        }
    }
}

/// Fresh stores whose first child is killed while it creates the file, before the rounds.
const FIRST_OPEN_TRIALS: u32 = 8;

fn parent(seed: u64, rounds: u32, first_open_trials: u32, store: &Store) -> Result<usize, String> {
    let mut rng = Rng::new(seed);
    let mut root = [0u8; 32];
    root.iter_mut()
        .for_each(|b| *b = rng.next().to_le_bytes()[0]);
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let round = |dir: &tempfile::TempDir,
                 n: u32,
                 kill: KillPoint,
                 child_seed: u64,
                 promises: &mut Promises| {
        run_child(
            &exe,
            store,
            dir.path(),
            &root,
            n,
            child_seed,
            kill,
            promises,
        )?;
        runtime.block_on(verify(store, dir.path(), &root, promises))
    };
    let tempdir = || tempfile::tempdir().map_err(|e| e.to_string());
    let kept = |dir: tempfile::TempDir| format!("the store is kept in {}", dir.keep().display());

    // A store killed while its file is being created must open afterwards: a new store's
    // first start is a crash point like any other.
    for trial in 0..first_open_trials {
        let dir = tempdir()?;
        let kill = KillPoint::WhileOpening(Duration::from_micros(rng.below(3000)));
        let mut promises = Promises::default();
        if let Err(failure) = round(&dir, 0, kill, rng.next(), &mut promises) {
            return Err(format!(
                "new store {trial} ({kill:?}): {failure}\n{}",
                kept(dir)
            ));
        }
    }

    // One store through every round: acknowledgements accumulate, and every round checks all
    // of them again, so a later crash (or rewrap) cannot quietly damage an earlier write.
    let dir = tempdir()?;
    let mut promises = Promises::default();
    for n in 0..rounds {
        let kill = KillPoint::draw(&mut rng, n);
        if let Err(failure) = round(&dir, n, kill, rng.next(), &mut promises) {
            return Err(format!("round {n} ({kill:?}): {failure}\n{}", kept(dir)));
        }
    }
    if promises.acknowledged == 0 {
        return Err("no child acknowledged a single write: nothing was checked".to_owned());
    }
    eprintln!(
        "crash consistency: seed {seed}, {} keys promised, {:.1} s",
        promises.by_key.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(promises.acknowledged)
}

/// Runs one child until its kill point, kills it, and records every acknowledgement it got
/// out, including those still in the pipe when it died.
#[allow(clippy::too_many_arguments)]
fn run_child(
    exe: &Path,
    store: &Store,
    dir: &Path,
    root: &[u8; 32],
    round: u32,
    child_seed: u64,
    kill: KillPoint,
    promises: &mut Promises,
) -> Result<(), String> {
    let mut child = Command::new(exe)
        .env(CHILD_ENV, dir)
        .env(STORE_ENV, store.env_value())
        .env(KEY_ENV, hex(root))
        .env(ROUND_ENV, round.to_string())
        .env(CHILD_SEED_ENV, child_seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start the child: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let (tx, lines) = mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        // Only whole lines count: a line cut by the kill has no newline and is dropped.
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
            if let Some(whole) = line.strip_suffix('\n')
                && tx.send(whole.to_owned()).is_err()
            {
                break;
            }
            line.clear();
        }
    });

    let mut acks = 0usize;
    let mut exited_by_itself = false;
    let reached = |line: &str, acks: usize| match kill {
        KillPoint::Blind(_) => false,
        KillPoint::WhileOpening(_) => line == "opening",
        KillPoint::AfterReady => line == "ready",
        KillPoint::AfterAcks(n, _) => acks >= n,
    };
    if let KillPoint::Blind(wait) = kill {
        std::thread::sleep(wait);
    } else {
        loop {
            match lines.recv_timeout(LINE_TIMEOUT) {
                Ok(line) => {
                    let before = promises.acknowledged;
                    promises.record(&line)?;
                    acks += promises.acknowledged - before;
                    if reached(&line, acks) {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    exited_by_itself = true;
                    break;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("the child said nothing for {LINE_TIMEOUT:?}"));
                }
            }
        }
        if let KillPoint::AfterAcks(_, pause) | KillPoint::WhileOpening(pause) = kill {
            std::thread::sleep(pause);
        }
    }
    // SIGKILL on unix; an error only means the child has already exited.
    let _ = child.kill();
    let status = child.wait().map_err(|e| e.to_string())?;
    // Whatever the child wrote before it died was acknowledged too.
    for line in lines.iter() {
        promises.record(&line)?;
    }
    reader.join().map_err(|_| "the stdout reader panicked")?;
    if !status.success() && (exited_by_itself || !killed(status)) {
        return Err(format!("the child failed on its own: {status}"));
    }
    Ok(())
}

/// Whether the child died of our `SIGKILL` rather than of its own failure.
#[cfg(unix)]
fn killed(status: std::process::ExitStatus) -> bool {
    use std::os::unix::process::ExitStatusExt;
    status.signal() == Some(9)
}

#[cfg(not(unix))]
fn killed(_status: std::process::ExitStatus) -> bool {
    true
}

/// Reopens the store after a crash and checks every promise and every record.
async fn verify(
    store: &Store,
    dir: &Path,
    root: &[u8; 32],
    promises: &Promises,
) -> Result<(), String> {
    let backend = store
        .open(dir)
        .map_err(|e| format!("the store does not reopen: {e}"))?;
    let barrier = Barrier::new(backend);
    let root = RootKey::from_slice(root).map_err(|e| e.to_string())?;
    if !barrier.is_initialized().await.map_err(|e| e.to_string())? {
        // Killed before the keyring was committed: nothing else may be there either.
        let raw = barrier
            .backend()
            .list("")
            .await
            .map_err(|e| e.to_string())?;
        if !raw.is_empty() || promises.acknowledged > 0 {
            return Err(format!(
                "no keyring, yet {} records and {} acknowledged writes",
                raw.len(),
                promises.acknowledged
            ));
        }
        return Ok(());
    }
    barrier
        .unseal(&root)
        .await
        .map_err(|e| format!("unseal after the crash: {e}"))?;

    // Every record: authentic, named like a write the workload makes, and holding a value
    // that write really wrote.
    let keys = barrier.list("").await.map_err(|e| e.to_string())?;
    let mut present: BTreeMap<&str, Vec<u8>> = BTreeMap::new();
    let mut batches: BTreeMap<String, (usize, BTreeSet<usize>)> = BTreeMap::new();
    for key in &keys {
        let value = match barrier.get(key).await {
            Ok(Some(value)) => value.expose_secret().to_vec(),
            Ok(None) => return Err(format!("{key:?} is listed but cannot be read")),
            Err(err) => return Err(format!("{key:?} does not read back: {err}")),
        };
        let generations = match parse_key(key) {
            None => return Err(format!("a record nobody wrote: {key:?}")),
            Some(KeyKind::Overwritten) => 0..GENERATIONS,
            Some(KeyKind::BatchMember { batch, n, j }) => {
                let entry = batches.entry(batch).or_insert((n, BTreeSet::new()));
                entry.1.insert(j);
                0..1
            }
            Some(KeyKind::Single | KeyKind::Deleted) => 0..1,
        };
        if !generations.clone().any(|g| expected_value(key, g) == value) {
            return Err(format!(
                "{key:?} holds {} bytes that no write of generations {generations:?} wrote",
                value.len()
            ));
        }
        present.insert(key, value);
    }
    for (batch, (n, members)) in &batches {
        if members.len() != *n {
            return Err(format!(
                "batch {batch:?} is torn: members {members:?} of {n} are present"
            ));
        }
    }

    for (key, promise) in &promises.by_key {
        let value = present.get(key.as_str());
        match (*promise, value) {
            (Promise::Present { min_generation }, Some(value)) => {
                if !(min_generation..GENERATIONS).any(|g| expected_value(key, g) == *value) {
                    return Err(format!(
                        "{key:?} lost its acknowledged generation {min_generation}"
                    ));
                }
            }
            (Promise::Present { .. }, None) => {
                return Err(format!("the acknowledged write of {key:?} is gone"));
            }
            (Promise::Absent, Some(_)) => {
                return Err(format!("the acknowledged delete of {key:?} was undone"));
            }
            (Promise::WholeBatch, _) => {
                if !batches.contains_key(key) {
                    return Err(format!("the acknowledged batch {key:?} is gone"));
                }
            }
            (Promise::PresentUnlessDeleted | Promise::Absent, _) => {}
        }
    }
    Ok(())
}
