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

/** How much of an endpoint's time may be used ahead of now: its burst. */
export const PACE_BURST_MS = 1_000;

/**
 * How late a delivery may come back for the time it was given and still use it (the
 * deliver queue may be slow to hand it over). Later than this it reserves again,
 * rather than go out together with every other late one.
 */
export const PACE_GRACE_MS = 60_000;

/** Milliseconds one POST takes of an endpoint's time at `ratePerSecond`. */
export function paceInterval(ratePerSecond: number): number {
  return 1000 / ratePerSecond;
}

/** When a send whose share of the endpoint's time starts at `freeFrom` may go (at most `now`: at once). */
export function paceSendAt(freeFrom: number, now: number): number {
  return Math.max(now, freeFrom - PACE_BURST_MS);
}

/** Whether a delivery that was given `sendAt` (for this attempt) may still use it at `now`. */
export function paceStillHeld(sendAt: number | undefined, now: number): sendAt is number {
  return sendAt !== undefined && now - sendAt <= PACE_GRACE_MS;
}
