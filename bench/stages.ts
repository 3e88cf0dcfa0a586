/**
 * Where the bench's time goes: percentiles, and the split of a tenant's events into
 * the stages of the pipeline from what the sandbox's event source mappings report.
 */

/**
 * The p-th percentile by nearest rank: the smallest value that at least p% of the
 * values do not exceed (rank ⌈p/100 · n⌉), or null for no values. Of 100 values the
 * p99 is the 99th, not the largest.
 */
export function percentile(values: number[], p: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1] as number;
}

/**
 * Where an event's time goes after the API accepted it: waiting in the distribute
 * queue for a distributor (its doorbell), the distributor's invocation, waiting in
 * the deliver queue, and the delivery's invocation (which ends with the POST).
 */
export interface StageSample {
  readonly stage: 'doorbell_wait' | 'delivery_wait' | `${string}_run`;
  /** Whose message waited; invocations are everyone's. */
  readonly tenant?: string;
  readonly at: number;
  readonly ms: number;
}

/**
 * The tenant of a doorbell, or of a delivery's first attempt; undefined for what
 * waits on purpose (retries, probes and release steps carry a delay).
 */
export function firstTryTenant(queue: string, body: string): string | undefined {
  try {
    const message = JSON.parse(body) as { tenant?: string; tenantId?: string; kind?: string; attempt?: number; notBefore?: number };
    if (queue.startsWith('Distribute')) return message.tenant; // either lane of doorbells
    const firstTry = (message.kind ?? 'delivery') === 'delivery' && message.attempt === 1 && message.notBefore === undefined;
    return firstTry ? message.tenantId : undefined;
  } catch {
    return undefined;
  }
}

/** Each stage's p50 and p99 in a window: the waits of `tenant`'s messages, and every invocation's duration. */
export function stageSpread(stages: readonly StageSample[], tenant: string, from: number, to: number) {
  const pick = (stage: string, own: boolean) =>
    stages.filter((s) => s.stage === stage && s.at >= from && s.at < to && (!own || s.tenant === tenant)).map((s) => Math.round(s.ms));
  const both = (values: number[]) => ({ p50: percentile(values, 50), p99: percentile(values, 99) });
  return {
    doorbell_wait: both(pick('doorbell_wait', true)),
    distributor_run: both(pick('distributor_run', false)),
    delivery_wait: both(pick('delivery_wait', true)),
    delivery_run: both(pick('delivery_run', false)),
  };
}
