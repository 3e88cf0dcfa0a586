/**
 * The sandbox's metrics: every data point kept in memory for an hour, with its
 * time, so the alarm definitions can be evaluated as CloudWatch would. The
 * pipeline's own metrics arrive through the same port as in Lambda; the sandbox
 * adds what AWS would measure (queue ages, function errors, API 5xx) under the
 * alarm definitions' source names.
 */
import type { MetricsPort } from '../functions/core/telemetry.ts';

export interface DataPoint {
  readonly at: number;
  readonly key: string;
  readonly value: number;
}

const KEEP_MS = 3_600_000;

/** The key a metric source is recorded under (see functions/definitions/alarms.ts). */
export function sourceKey(source: {
  kind: string;
  name: string;
  queue?: string;
  deadLetters?: boolean;
  fn?: string;
  dimensions?: Readonly<Record<string, string>>;
}): string {
  switch (source.kind) {
    case 'queue':
      return `queue:${source.queue}${source.deadLetters ? ':dlq' : ''}:${source.name}`;
    case 'function':
      return `function:${source.fn}:${source.name}`;
    case 'api':
      return `api:${source.name}`;
    default:
      return `sluice:${source.dimensions && Object.keys(source.dimensions).length > 0 ? dimensionKey(source.name, source.dimensions) : source.name}`;
  }
}

/** One source's data points, in time order. */
interface Series {
  at: number[];
  values: number[];
}

/** The first index whose time is at or after `from` (times are in order). */
function lowerBound(times: readonly number[], from: number): number {
  let lo = 0;
  let hi = times.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((times[mid] as number) < from) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

export class InMemoryMetrics implements MetricsPort {
  readonly #totals = new Map<string, number>();
  /** Points by source: an alarm reads its few sources, not every point recorded. */
  readonly #series = new Map<string, Series>();
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  count(name: string, value = 1, dimensions?: Readonly<Record<string, string>>): void {
    this.#add(name, value);
    this.record(sourceKey({ kind: 'sluice', name }), value);
    if (dimensions && Object.keys(dimensions).length > 0) {
      // Its dimensioned copy too, as Powertools publishes it: an alarm may read one reason alone.
      this.#add(dimensionKey(name, dimensions), value);
      this.record(sourceKey({ kind: 'sluice', name, dimensions }), value);
    }
  }

  seconds(name: string, value: number): void {
    this.record(sourceKey({ kind: 'sluice', name }), value);
  }

  /** Records a data point of a source (a gauge or a count) at the current time. */
  record(key: string, value: number): void {
    const at = this.#now();
    let series = this.#series.get(key);
    if (!series) {
      series = { at: [], values: [] };
      this.#series.set(key, series);
    }
    // A clock that went back (tests move it freely) starts the series' order again.
    if (series.at.length > 0 && at < (series.at.at(-1) as number)) {
      const keep = series.at.map((t, i) => [t, series?.values[i] as number] as const).sort((a, b) => a[0] - b[0]);
      series.at = keep.map(([t]) => t);
      series.values = keep.map(([, v]) => v);
    }
    series.at.push(at);
    series.values.push(value);
    if (series.at.length % 1_000 === 0) {
      const drop = lowerBound(series.at, at - KEEP_MS + 1);
      series.at.splice(0, drop);
      series.values.splice(0, drop);
    }
  }

  /** Data points of a key in [from, to). */
  points(key: string, from: number, to: number): number[] {
    const series = this.#series.get(key);
    if (!series) return [];
    const out: number[] = [];
    for (let i = lowerBound(series.at, from); i < series.at.length && (series.at[i] as number) < to; i++)
      out.push(series.values[i] as number);
    return out;
  }

  /** The time of a key's latest data point before `to`; undefined when it has none kept. */
  latestBefore(key: string, to: number): number | undefined {
    const series = this.#series.get(key);
    if (!series) return undefined;
    const index = lowerBound(series.at, to) - 1;
    return index >= 0 ? series.at[index] : undefined;
  }

  /** The total of a counter since start, over all dimension values unless some are given. */
  total(name: string, dimensions?: Readonly<Record<string, string>>): number {
    return this.#totals.get(dimensions ? dimensionKey(name, dimensions) : name) ?? 0;
  }

  #add(key: string, value: number): void {
    this.#totals.set(key, (this.#totals.get(key) ?? 0) + value);
  }
}

function dimensionKey(name: string, dimensions: Readonly<Record<string, string>>): string {
  const parts = Object.entries(dimensions)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}`);
  return `${name}|${parts.join(',')}`;
}
