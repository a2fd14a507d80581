//! The power-loss-safe snapshot store: segment files on flash ([`segment`]), the writer thread ([`writer`]) and the
//! read-only CLI back-ends ([`export`]: ls, verify, JSON export; [`mcap_export`]: MCAP).

pub mod export;
pub mod hwm;
pub mod mcap_export;
pub mod runs;
pub mod segment;
pub mod writer;

pub use export::{
    export_json, export_mcap, last_event_id, ls, ls_with_skipped, print_table, verify, EventSummary, VerifyReport,
};
pub use segment::{FsyncPolicy, RecoveryReport, SegmentStore, StoreConfig, StoreError};
pub use writer::{spawn_writer, WriterConfig, WriterHandle, WriterStats};
