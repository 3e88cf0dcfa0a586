/**
 * How far one run's p99 ratio can be trusted. The steady tenant's 10 events of a
 * request travel together, so a window's p99 rests on its slowest two or three
 * requests, and two calm windows alone differ by a third or more. The bench therefore
 * resamples whole requests of both windows (a bootstrap) and reports the middle 90% of
 * the ratios it finds beside the ratio itself: an interval that holds 1 says the run
 * could not tell the storm from calm, one wholly above 1.2 that the miss is not the
 * luck of a few requests.
 */
import { percentile } from './stages.ts';

/** A request's latencies: the events it published, each from the 202 to its arrival. */
export type RequestLatencies = readonly number[];

/** The same numbers from the same seed: a run's interval can be computed again from its report. */
function seeded(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** The p99 of as many requests as `requests` holds, drawn from it with replacement. */
function resampledP99(requests: readonly RequestLatencies[], random: () => number): number {
  const values: number[] = [];
  for (let i = 0; i < requests.length; i++) {
    values.push(...(requests[Math.floor(random() * requests.length)] as RequestLatencies));
  }
  return percentile(values, 99) ?? 0;
}

/**
 * The 5th and 95th percentiles of p99(storm) ÷ p99(calm) over `rounds` resamplings
 * of whole requests, rounded to two decimals; null when either window has no request.
 */
export function p99RatioInterval(
  storm: readonly RequestLatencies[],
  calm: readonly RequestLatencies[],
  rounds = 1_000,
  seed = 1,
): { low: number; high: number } | null {
  if (storm.length === 0 || calm.length === 0) return null;
  const random = seeded(seed);
  const ratios: number[] = [];
  for (let i = 0; i < rounds; i++) {
    const calmP99 = resampledP99(calm, random);
    if (calmP99 > 0) ratios.push(resampledP99(storm, random) / calmP99);
  }
  const low = percentile(ratios, 5);
  const high = percentile(ratios, 95);
  if (low === null || high === null) return null;
  return { low: Math.round(low * 100) / 100, high: Math.round(high * 100) / 100 };
}

/** A label's delivered events accepted in [from, to), grouped by request (events of one request share their 202's time). */
export function requestLatencies(
  events: ReadonlyArray<{ label: string; acceptedAt: number; receivedAt: number | null }>,
  label: string,
  from: number,
  to: number,
): RequestLatencies[] {
  const byRequest = new Map<number, number[]>();
  for (const e of events) {
    if (e.label !== label || e.receivedAt === null || e.acceptedAt < from || e.acceptedAt >= to) continue;
    let request = byRequest.get(e.acceptedAt);
    if (!request) {
      request = [];
      byRequest.set(e.acceptedAt, request);
    }
    request.push(e.receivedAt - e.acceptedAt);
  }
  return [...byRequest.values()];
}
