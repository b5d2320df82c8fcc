//! Host-visible counters of driver activity (launches, GEMMs, copies, syncs, graphs), read by
//! the benchmarks and the tests that check a decode step's host work.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Host-visible driver activity counters (cumulative since the device was opened).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceCounters {
    /// Kernel launches issued one by one from the host (not counting graph replays).
    pub kernel_launches: u64,
    /// cuBLAS GEMM calls issued from the host (not counting graph replays).
    pub gemm_calls: u64,
    /// Host-to-device copies.
    pub htod_copies: u64,
    /// Device-to-host copies.
    pub dtoh_copies: u64,
    /// Host waits for the stream (synchronize).
    pub syncs: u64,
    /// CUDA graph launches.
    pub graph_launches: u64,
    /// Stream captures that produced a graph.
    pub graph_captures: u64,
}

impl DeviceCounters {
    /// `self - earlier`, field by field.
    pub fn since(&self, earlier: &Self) -> Self {
        Self {
            kernel_launches: self.kernel_launches - earlier.kernel_launches,
            gemm_calls: self.gemm_calls - earlier.gemm_calls,
            htod_copies: self.htod_copies - earlier.htod_copies,
            dtoh_copies: self.dtoh_copies - earlier.dtoh_copies,
            syncs: self.syncs - earlier.syncs,
            graph_launches: self.graph_launches - earlier.graph_launches,
            graph_captures: self.graph_captures - earlier.graph_captures,
        }
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) kernel_launches: AtomicU64,
    pub(crate) gemm_calls: AtomicU64,
    pub(crate) htod_copies: AtomicU64,
    pub(crate) dtoh_copies: AtomicU64,
    pub(crate) syncs: AtomicU64,
    pub(crate) graph_launches: AtomicU64,
    pub(crate) graph_captures: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}
