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
 *
 * A slow endpoint gets less: POSTs under way at once are its rate times its answer
 * time (Little's law), each holding a delivery worker (and its invocation's batch)
 * until it answers. One that answers in 9 s at 50 a second would hold 450 of them, so
 * once it answers slowly its share is its answer time over MAX_IN_FLIGHT_PER_ENDPOINT.
 */

import { createHash } from 'node:crypto';
import { MAX_SQS_DELAY_SECONDS } from './backoff.ts';

/** How much of an endpoint's time may be used at once: its burst, a second's worth of its rate. */
export const PACE_BURST_MS = 1_000;

/**
 * The POSTs a second an endpoint gets: the deployment's `endpointRatePerSecond`, or less
 * where its webhook asks for less (`rate_per_second`, for a receiver that cannot take
 * the deployment's rate). Never more: the deployment's rate is what its operators sized
 * the delivery workers and the shared deliver queue for.
 */
export function endpointRate(deploymentRate: number, webhookRate: number | undefined): number {
  return webhookRate === undefined ? deploymentRate : Math.min(deploymentRate, webhookRate);
}

/** Milliseconds one POST takes of an endpoint's time at `ratePerSecond`. */
export function paceInterval(ratePerSecond: number): number {
  return 1000 / ratePerSecond;
}

/** An answer that takes at least this long is slow: the endpoint's pace then follows its answer time. */
export const SLOW_ANSWER_MS = 1_000;

/** Most POSTs to one slow endpoint under way at once. */
export const MAX_IN_FLIGHT_PER_ENDPOINT = 10;

/**
 * Milliseconds one POST takes of an endpoint's time: its rate's share, or, for an
 * endpoint that answers slowly (`slowMs`), its answer time over MAX_IN_FLIGHT_PER_ENDPOINT.
 */
export function paceIntervalFor(ratePerSecond: number, slowMs: number | undefined): number {
  return Math.max(paceInterval(ratePerSecond), (slowMs ?? 0) / MAX_IN_FLIGHT_PER_ENDPOINT);
}

/**
 * The slow answer time to keep for an endpoint (undefined: none) after an answer that
 * took `durationMs`, `kept` being the one kept so far, `took` whether the answer took the
 * delivery (a 2xx). A slow answer's own time, whatever it said (it held a delivery worker
 * that long); a quicker one that took the delivery halves what was kept (gone under
 * SLOW_ANSWER_MS), so that a lone quick answer does not give a slow endpoint its whole
 * rate back at once. A quick answer that took nothing (a 429 or 503 asking to wait, a
 * quick 500, a refused connection) leaves it: how quickly an endpoint sheds or refuses
 * says nothing of how long it takes over a delivery.
 */
export function slowAfterAnswer(kept: number | undefined, durationMs: number, took: boolean): number | undefined {
  if (durationMs >= SLOW_ANSWER_MS) return Math.round(durationMs);
  if (kept === undefined || !took) return kept;
  const halved = Math.round(kept / 2);
  return halved >= SLOW_ANSWER_MS ? halved : undefined;
}

/**
 * How long a POST may go unanswered before the endpoint is noted as at least that slow
 * (`kept` being the slow answer time kept so far); each note after it comes at twice the
 * wait of the one before. An endpoint that starts to hang then gets the slow pace within
 * a second, not once its first POSTs time out: until then its whole rate's worth of
 * POSTs a second would go on, each to hold a delivery worker for the whole timeout.
 */
export function unansweredNoteAfter(kept: number | undefined): number {
  return Math.max(SLOW_ANSWER_MS, 2 * (kept ?? 0));
}

/** Whether the slow answer time kept is worth a write: it comes or goes, or moves by more than a quarter. */
export function slowAnswerChanged(kept: number | undefined, next: number | undefined): boolean {
  if (kept === undefined || next === undefined) return kept !== next;
  return Math.abs(next - kept) > kept / 4;
}

/**
 * When a send whose share of the endpoint's time starts at `freeFrom` may go (at
 * most `now`: at once). GCRA's tolerance is the burst less one share, so a second's
 * worth of the rate goes at once and no more.
 */
export function paceSendAt(freeFrom: number, now: number, intervalMs: number): number {
  // A share longer than the burst (a slow endpoint's) goes when it starts.
  return Math.max(now, freeFrom - Math.max(0, PACE_BURST_MS - intervalMs));
}

/** The shortest wait between two looks of a delivery waiting for its share; a wait this long or less is one. */
export const PACE_LOOK_MIN_SECONDS = 60;

/**
 * How long a delivery that waits `waitSeconds` for its share of the endpoint's time
 * waits before it looks again: half the wait (a minute at least, SQS's longest delay at
 * most), or all of a wait of a minute or less. At each look it takes a new share if the
 * endpoint's time was given back since (slow no more, or a new URL). A backlog given
 * shares at a slow pace during an endpoint's slow moment (a receiver's cold start)
 * then comes back within half of what it still had to wait, not all of it; each
 * delivery looks about log₂(wait / 1 min) more times, where looking every minute would
 * send a long-slow endpoint's whole backlog round the shared deliver queue every minute.
 */
export function paceLookSeconds(waitSeconds: number): number {
  if (waitSeconds <= PACE_LOOK_MIN_SECONDS) return waitSeconds;
  return Math.min(MAX_SQS_DELAY_SECONDS, Math.max(PACE_LOOK_MIN_SECONDS, waitSeconds / 2));
}

/**
 * A delivery given a share of its endpoint's time more than this far ahead waits far: its
 * endpoint's deliveries come faster than its pace (a slow endpoint's, or its whole rate)
 * lets them go, and its backlog has grown past what it clears in a moment. SQS's longest
 * delay: a wait past it goes round the shared deliver queue more than once (a chain of
 * looks), and a subscriber gets its events that late, three times the lateness at which
 * `delivery-backlog-age` pages for the platform. A receiver's slow moment (a cold start)
 * books a minute or two ahead; one that answers in 9 s at 50 deliveries a second books
 * past this within 20 s, and a day ahead within an hour.
 */
export const PACE_FAR_AHEAD_MS = MAX_SQS_DELAY_SECONDS * 1000;

/** Whether a share of the endpoint's time `waitMs` from now is far ahead (more than PACE_FAR_AHEAD_MS). */
export function pacedFarAhead(waitMs: number): boolean {
  return waitMs > PACE_FAR_AHEAD_MS;
}

/**
 * How far ahead a quick endpoint's share may be before its deliveries are held instead: 5
 * seconds of its time (250 POSTs at 50 a second), past the second's burst that goes at once.
 */
export const QUICK_HOLD_AHEAD_MS = 5_000;

/**
 * Whether a delivery given a share `waitMs` ahead of an endpoint that answers in `slowMs`
 * (undefined: quickly) is held in DynamoDB instead of waiting for it in the deliver queue.
 * Held, its backlog is capped (`heldPerWebhook`; past it, a gap marker) and released in
 * order, once the shares given before it are used, packed into POSTs of up to 100 events,
 * up to 10 at once; left in the deliver queue, nothing bounded it.
 *
 * A quick endpoint's past QUICK_HOLD_AHEAD_MS: it gets more than its whole rate. A
 * delivery a POST, one tenant at its default throttle (500 events a second) on objects of
 * its own sent 500 deliveries a second to a webhook that takes 50: 450 more a second
 * waited, 1.6 million after an hour, each going round the shared queue every 15 minutes
 * for a time hours ahead. Released packed, they go in 5 POSTs a second; held for the 5
 * seconds before the release, a burst of 1,000 a second holds half the cap.
 *
 * A slow endpoint's past PACE_FAR_AHEAD_MS (15 minutes, SQS's longest delay): at 50
 * deliveries a second to one answering in 9 s, 704,000 waited after four hours, their times
 * a week ahead. Its slow moments (a cold start) book a minute or two, which its shares,
 * given back when it answers quickly again, clear without a chain.
 */
export function holdsBehindPace(waitMs: number, slowMs: number | undefined): boolean {
  return slowMs === undefined ? waitMs > QUICK_HOLD_AHEAD_MS : pacedFarAhead(waitMs);
}

/**
 * Whether a delivery keeps the share of its endpoint's time it was given at `paceMs` a
 * POST, now that each POST takes `intervalMs`. A share given at the endpoint's pace now,
 * or a slower one, is kept. Of those given at a quicker pace (the endpoint answers more
 * slowly since), a part `paceMs / intervalMs` is kept, chosen by the delivery's id, and
 * the rest take new shares behind the endpoint's backlog: the shares kept then come at
 * the endpoint's pace now. Giving them all up stopped the endpoint's POSTs for as long as
 * its backlog (each delivery coming due took a share behind it, hours ahead for an
 * endpoint slow for hours that answered a quarter more slowly); keeping them all let its
 * POSTs under way grow by intervalMs / paceMs (450 for a second's burst at the whole rate
 * to an endpoint that turns out to answer in 9 s). By the id, not at random, so that a
 * delivery looked at twice is judged the same.
 */
export function keepsShare(deliveryId: string, paceMs: number, intervalMs: number): boolean {
  if (paceMs >= intervalMs) return true;
  return createHash('sha256').update(deliveryId).digest().readUInt32BE(0) / 2 ** 32 < paceMs / intervalMs;
}
