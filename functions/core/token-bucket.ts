/**
 * Token-bucket arithmetic with injected time: `rate` tokens per second refill a
 * bucket of `burst` tokens. Used for per-object admission at ingest and, in the
 * sandbox, for the per-tenant throttle that API Gateway usage plans apply in AWS.
 */

export interface Bucket {
  readonly tokens: number;
  /** When `tokens` was last computed (epoch ms). */
  readonly at: number;
}

export interface TakeResult {
  readonly ok: boolean;
  readonly bucket: Bucket;
  /** When not ok: how long until `n` tokens are there. */
  readonly retryAfterMs: number;
}

export function refill(bucket: Bucket | undefined, rate: number, burst: number, now: number): Bucket {
  if (bucket === undefined) return { tokens: burst, at: now };
  const elapsed = Math.max(0, now - bucket.at);
  return { tokens: Math.min(burst, bucket.tokens + (elapsed * rate) / 1000), at: Math.max(now, bucket.at) };
}

export function take(bucket: Bucket | undefined, n: number, rate: number, burst: number, now: number): TakeResult {
  const current = refill(bucket, rate, burst, now);
  if (current.tokens >= n) return { ok: true, bucket: { tokens: current.tokens - n, at: current.at }, retryAfterMs: 0 };
  const missing = n - current.tokens;
  return { ok: false, bucket: current, retryAfterMs: Math.ceil((missing * 1000) / rate) };
}
