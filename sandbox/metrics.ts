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
export function sourceKey(source: { kind: string; name: string; queue?: string; deadLetters?: boolean; fn?: string }): string {
  switch (source.kind) {
    case 'queue':
      return `queue:${source.queue}${source.deadLetters ? ':dlq' : ''}:${source.name}`;
    case 'function':
      return `function:${source.fn}:${source.name}`;
    case 'api':
      return `api:${source.name}`;
    default:
      return `sluice:${source.name}`;
  }
}

export class InMemoryMetrics implements MetricsPort {
  readonly #totals = new Map<string, number>();
  #points: DataPoint[] = [];
  readonly #now: () => number;

  constructor(now: () => number = Date.now) {
    this.#now = now;
  }

  count(name: string, value = 1, dimensions?: Readonly<Record<string, string>>): void {
    this.#add(name, value);
    if (dimensions && Object.keys(dimensions).length > 0) this.#add(dimensionKey(name, dimensions), value);
    this.record(sourceKey({ kind: 'sluice', name }), value);
  }

  /** Records a data point of a source (a gauge or a count) at the current time. */
  record(key: string, value: number): void {
    const at = this.#now();
    this.#points.push({ at, key, value });
    if (this.#points.length % 1_000 === 0) this.#points = this.#points.filter((p) => p.at > at - KEEP_MS);
  }

  /** Data points of a key in [from, to). */
  points(key: string, from: number, to: number): number[] {
    return this.#points.filter((p) => p.key === key && p.at >= from && p.at < to).map((p) => p.value);
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
