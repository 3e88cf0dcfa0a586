/**
 * The per-endpoint delivery rate (SPEC §2, §4) as a schedule rather than a gate.
 * Each POST takes T = 1000 / rate ms of the endpoint's time, and the endpoint's tat
 * (GCRA's "theoretical arrival time", one number on one item) is when its time is
 * next free. A delivery reserves its share once and waits, in the deliver queue, for
 * the time it was given; a second's worth of the rate may go at once.
 *
 * Asking again every second instead made a backlog of n deliveries to an endpoint
 * over its rate cost n reservations and n re-sends a second, n²/2r in all: one
 * tenant's busy endpoint filling the shared deliver queue and its workers.
 */

/** How much of an endpoint's time may be used at once: its burst, a second's worth of its rate. */
export const PACE_BURST_MS = 1_000;

/** Milliseconds one POST takes of an endpoint's time at `ratePerSecond`. */
export function paceInterval(ratePerSecond: number): number {
  return 1000 / ratePerSecond;
}

/**
 * When a send whose share of the endpoint's time starts at `freeFrom` may go (at
 * most `now`: at once). GCRA's tolerance is the burst less one share, so a second's
 * worth of the rate goes at once and no more.
 */
export function paceSendAt(freeFrom: number, now: number, intervalMs: number): number {
  return Math.max(now, freeFrom - (PACE_BURST_MS - intervalMs));
}
