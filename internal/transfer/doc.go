// Package transfer predicts what a QEMU live migration under libvirt will cost
// and picks its options. It is pure: no I/O, no clock.
//
// The pieces, and the QEMU/libvirt behaviour each one models:
//
//   - Model.Predict: RAM pre-copy, pass by pass. The first pass sends all RAM
//     (M MiB) but its zero pages (Z), which cost a flag each, while the guest
//     runs with dirty logging on; each later pass resends what was dirtied
//     during the previous one, V_i = min(W, D·t_{i-1}), where D is the dirty
//     rate and W the working set (the guest cannot dirty more distinct pages
//     than it touches). With W = M, Z = 0 and D < R this is the geometric series
//     V_i = M·(D/R)^i. QEMU stops the guest once the remaining set fits its
//     downtime-limit (default 300 ms, libvirt's virDomainMigrateSetMaxDowntime),
//     V/R <= limit; the pause is that last copy plus a fixed switch-over overhead
//     for device state, which the limit does not cover. QEMU lifts the bandwidth
//     cap for the last copy, so it runs at the uncapped rate. QEMU never gives up
//     by itself, so after MaxRounds passes the model reports no convergence, with
//     the time it reached and the pause a forced switch-over would cost.
//   - Rates: R = min(link, libvirt's bandwidth parameter (QEMU max-bandwidth,
//     MiB/s, limiting wire bytes; the libvirt driver caps post-copy alike),
//     streams × per-stream rate). Several streams are multifd channels
//     (VIR_MIGRATE_PARALLEL, parallel.connections; QEMU multifd-channels); one
//     TCP stream is bound by one core. RDMA (an rdma:// URI) copies without a
//     thread per stream, so only the link and cap bind.
//   - Compression (VIR_MIGRATE_COMPRESSED): zstd or zlib compress on the multifd
//     channels (multifd-compression), so R is the wire rate times the
//     compressibility ratio, up to what the channels' threads compress. XBZRLE
//     delta-encodes re-sent pages found in its cache (xbzrle-cache-size, 64 MiB),
//     starting with the second pass, on the single migration thread. The source
//     CPU this costs is reported. QEMU refuses xbzrle with multifd, and RDMA with
//     multifd, compression or post-copy; Model.Validate knows these rules.
//   - Auto-converge (VIR_MIGRATE_AUTO_CONVERGE): after a dirty-sync period of at
//     least a second in which the guest dirtied more than
//     throttle-trigger-threshold (50 %) of what was sent, twice, QEMU throttles
//     the vCPUs at cpu-throttle-initial (20 %), and adds cpu-throttle-increment
//     (10 %) at every second such period after that, up to max-cpu-throttle
//     (99 %). The throttle takes vCPU time away, so the dirty rate becomes
//     min(D, (1 - throttle)·Dmax), Dmax being what the guest would dirty with
//     its vCPUs to itself: D for a CPU-bound dirtier (the default), far more
//     for one that paces its writes, which then keeps its rate until the
//     throttle nears its maximum (the lab's guest does that).
//   - Post-copy (VIR_MIGRATE_POSTCOPY with postcopy-ram; the driver calls
//     virDomainMigrateStartPostCopy after the first pass): the guest moves to
//     the target after PostCopyAfter passes; the pause carries device state and
//     the discard bitmap, not RAM; the target then pulls the remaining dirty set
//     over one channel, faulting on pages it touches first. The time is bounded
//     whatever the dirty rate. QEMU before 10.0 refuses it with multifd.
//   - Estimates: per (source, target) pair, an EWMA of the wire rate migrations
//     achieved (data processed over the time data moved, else QEMU's last
//     MemBps), starting from a prior, plus the setup time and a bounded history of
//     predicted against measured time, data and downtime. A rate held down by a
//     known cap (bandwidth, streams, compression) can only raise the estimate.
//   - Chooser: predicts every candidate (pre-copy, auto-converge, post-copy;
//     1/2/4/8 streams; compression on/off; TCP or RDMA) at the mean and the upper
//     dirty rate, and picks the fastest that converges within the downtime limit
//     at the upper rate, preferring, within a few percent, no throttling, no
//     post-copy, fewer streams and no compression. The Explanation lists all of
//     them with the reason each won or lost.
//
// Units: MiB and MiB/s throughout, times in seconds, downtimes in ms.
// StateTransferOptions.PredictedDataMiB is wire data, as the driver's
// DataProcessed counts it.
package transfer
