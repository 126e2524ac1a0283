//! Compiling sources with the interpreter itself, in a pool of worker
//! processes fed length-prefixed frames (`protocol`), each compile in a
//! pristine forked child (`worker.py`).

mod pool;
mod protocol;
mod worker;

pub use pool::{Done, Job, Pool, PoolOptions};
pub use protocol::{Fault, LevelResult};
