/**
 * Per-object admission (SPEC §2, §4): the queue cap and the per-object rate. The
 * rate is a token bucket kept as GCRA's "theoretical arrival time" (tat), a single
 * number that one conditional write can check and advance:
 *
 *   each event moves tat forward by T = 1000 / rate ms; an event may enter when
 *   tat (after it) ≤ now + burst · T, i.e. when the bucket still holds a token.
 *
 * These functions decide; the queue store turns the decision into a conditional write.
 */

export interface AdmissionLimits {
  readonly cap: number;
  readonly ratePerSecond: number;
  readonly burst: number;
}

export interface AdmissionState {
  readonly depth: number;
  /** Theoretical arrival time (epoch ms); undefined for a new object. */
  readonly tat: number | undefined;
}

export type RejectReason = 'queue_full' | 'rate_limited';

export interface AdmissionDecision {
  /** How many of the requested events may enter, from the first. */
  readonly admit: number;
  /** Why the rest may not. */
  readonly reason: RejectReason | undefined;
  /** When the next event could enter. */
  readonly retryAfterMs: number;
}

/** Milliseconds one event uses of an object's rate. */
export function emissionInterval(limits: Pick<AdmissionLimits, 'ratePerSecond'>): number {
  return 1000 / limits.ratePerSecond;
}

/** The tat after `n` events admitted at `now`. */
export function advanceTat(tat: number | undefined, n: number, now: number, limits: AdmissionLimits): number {
  return Math.max(tat ?? now, now) + n * emissionInterval(limits);
}

/** The latest tat before `n` more events at which they may still enter (the busy-case bound). */
export function tatLimit(n: number, now: number, limits: AdmissionLimits): number {
  return now + (limits.burst - n) * emissionInterval(limits);
}

/**
 * An object that cannot take a whole request takes no fewer than a quarter of a
 * second of its rate from it (25 events at 100/s), or the whole request if that is
 * smaller: a request that small enters whole or not at all. A producer writing
 * faster than the rate then gets its events in by steps, each one reserving write
 * and one turn, where token by token it would cost a write and a turn per request.
 */
export const RATE_STEP_SECONDS = 0.25;

/** The fewest of `requested` events an object short of tokens admits. */
export function rateStep(requested: number, limits: Pick<AdmissionLimits, 'ratePerSecond'>): number {
  return Math.min(requested, Math.max(1, Math.ceil(limits.ratePerSecond * RATE_STEP_SECONDS)));
}

/** How long a producer should wait when the queue is full: roughly one turn's drain. */
export const QUEUE_FULL_RETRY_MS = 1_000;

export function decideAdmission(state: AdmissionState, requested: number, limits: AdmissionLimits, now: number): AdmissionDecision {
  const t = emissionInterval(limits);
  const tat = Math.max(state.tat ?? now, now);
  const roomInQueue = Math.max(0, limits.cap - state.depth);
  // Tokens left: how many intervals fit between tat and the end of the burst window.
  const tokens = Math.max(0, Math.floor((now + limits.burst * t - tat) / t + 1e-9));
  const step = rateStep(requested, limits);
  const usable = tokens >= step ? tokens : 0;
  const admit = Math.min(requested, roomInQueue, usable);
  if (admit === requested) return { admit, reason: undefined, retryAfterMs: 0 };
  if (roomInQueue <= usable) return { admit, reason: 'queue_full', retryAfterMs: QUEUE_FULL_RETRY_MS };
  // The next step's tokens come once tat, after what this admits, is a step inside the window.
  const retryAfterMs = Math.max(1, Math.ceil(tat + (admit + step) * t - (now + limits.burst * t)));
  return { admit, reason: 'rate_limited', retryAfterMs };
}
