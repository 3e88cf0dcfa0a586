/**
 * The retry schedule (SPEC §4) as data: `schedule[n]` is the wait before attempt
 * n + 1. Attempt 1 goes at once, so `schedule[0]` is never read (config.ts refuses a
 * schedule that does not start with 0) and the schedule's length is the retry budget.
 * Waits get ±jitter; timeouts and 429s are penalised (the next wait doubles);
 * `Retry-After` on 429/503 is honoured within bounds. An answer that asks to wait
 * (429/503 with a readable `Retry-After`) is not a failure, up to FREE_WAITS times
 * per delivery: it waits as asked and spends nothing of the retry budget.
 */

export interface RetryPolicy {
  readonly scheduleSeconds: readonly number[];
  /** 0.2 = ±20 %. */
  readonly jitter: number;
}

/** The longest Retry-After honoured, and the shortest. */
export const RETRY_AFTER_MAX_SECONDS = 3_600;
export const RETRY_AFTER_MIN_SECONDS = 1;
/**
 * How many times one delivery may be answered "wait" (429/503 with a readable
 * Retry-After), in all its life, without it counting as a failed attempt. Past that the endpoint is taken at its answer, as failing: an endpoint
 * that asks every attempt to wait is quarantined like one that fails, rather than
 * keeping every delivery to it going round the deliver queue forever.
 */
export const FREE_WAITS = 5;

/** The longest a delivery to a failing endpoint waits before it asks again for the endpoint's one attempt. */
export const FAILING_WAIT_MAX_SECONDS = 300;

/**
 * How long a delivery waits after finding its failing endpoint's attempt taken, the
 * `waits + 1`-th time in a row: the attempt interval, doubled each time up to
 * FAILING_WAIT_MAX_SECONDS (never less than the interval). An endpoint that fails
 * often but never enough times in a row for quarantine stays failing for good, one
 * attempt an interval; asking again every interval, its backlog would go round the
 * shared deliver queue every interval (n deliveries, n reads, writes and re-sends an
 * interval), for as long as it kept failing.
 */
export function failingWaitSeconds(intervalMs: number, waits: number): number {
  const interval = intervalMs / 1000;
  return Math.max(interval, Math.min(FAILING_WAIT_MAX_SECONDS, interval * 2 ** Math.min(waits, 30)));
}

/** SQS caps DelaySeconds at 15 minutes: longer waits are chained. */
export const MAX_SQS_DELAY_SECONDS = 900;

export type FailureKind = 'status' | 'timeout' | 'connection' | 'throttled';

export interface AttemptFailure {
  readonly kind: FailureKind;
  /** `Retry-After` as the endpoint sent it (429/503 only). */
  readonly retryAfter?: string | undefined;
}

/** `seconds`, give or take `jitter` of it (0.2: ±20 %), in whole seconds. */
export function jitteredSeconds(seconds: number, jitter: number, random: () => number = Math.random): number {
  return Math.round(seconds * (1 + jitter * (2 * random() - 1)));
}

/**
 * Seconds to wait before attempt `failedAttempt + 1`, or undefined when the
 * budget is spent and the delivery goes to the dead letters.
 */
export function retryDelaySeconds(
  policy: RetryPolicy,
  failedAttempt: number,
  failure: AttemptFailure,
  now: number,
  random: () => number = Math.random,
): number | undefined {
  const base = policy.scheduleSeconds[failedAttempt];
  if (base === undefined) return undefined;
  const penalised = failure.kind === 'timeout' || failure.kind === 'throttled' ? Math.max(base * 2, 1) : base;
  const jittered = jitteredSeconds(penalised, policy.jitter, random);
  const asked = retryAfterSeconds(failure.retryAfter, now);
  return asked === undefined ? jittered : Math.max(jittered, asked);
}

/** C's asctime() format, the third HTTP-date form: `Sun Nov  6 08:49:37 1994`, always GMT. */
const ASCTIME = /^[A-Z][a-z]{2} ([A-Z][a-z]{2}) +(\d{1,2}) (\d{2}:\d{2}:\d{2}) (\d{4})$/;

/**
 * `Retry-After` as seconds (delta-seconds or an HTTP date), or undefined when absent
 * or unreadable. An HTTP date may come in any of its three formats (RFC 9110 §5.6.7:
 * IMF-fixdate, RFC 850 and asctime), all in GMT; asctime names no zone, so it is read
 * as GMT here rather than as the process's local time.
 */
export function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  if (value === undefined) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed);
  const asctime = ASCTIME.exec(trimmed);
  const text = asctime ? `${asctime[2]} ${asctime[1]} ${asctime[4]} ${asctime[3]} GMT` : trimmed;
  if (!/GMT$/.test(text)) return undefined;
  const date = Date.parse(text);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, Math.ceil((date - now) / 1000));
}

/** The seconds a 429 or 503 asks to be left alone (within bounds); undefined for any other answer, or without a readable Retry-After. */
export function askedWaitSeconds(statusCode: number | undefined, retryAfter: string | undefined, now: number): number | undefined {
  return statusCode === 429 || statusCode === 503 ? retryAfterSeconds(retryAfter, now) : undefined;
}

/** How long an endpoint asked to be left alone, within bounds; undefined when it did not ask. */
export function retryAfterSeconds(value: string | undefined, now: number): number | undefined {
  const asked = parseRetryAfter(value, now);
  return asked === undefined ? undefined : clamp(asked, RETRY_AFTER_MIN_SECONDS, RETRY_AFTER_MAX_SECONDS);
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(max, Math.max(min, value));
}

/** The SQS delay for a wait, and what remains to chain after it. */
export function sqsDelay(waitSeconds: number): { delaySeconds: number; remainingSeconds: number } {
  const delaySeconds = Math.min(MAX_SQS_DELAY_SECONDS, Math.max(0, Math.ceil(waitSeconds)));
  return { delaySeconds, remainingSeconds: Math.max(0, Math.ceil(waitSeconds) - delaySeconds) };
}
