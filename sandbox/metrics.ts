/** The sandbox's metrics: counters kept in memory, by name and dimensions. */
import type { MetricsPort } from '../functions/core/telemetry.ts';

export class InMemoryMetrics implements MetricsPort {
  readonly #counters = new Map<string, number>();

  count(name: string, value = 1, dimensions?: Readonly<Record<string, string>>): void {
    const key = metricKey(name, dimensions);
    this.#counters.set(key, (this.#counters.get(key) ?? 0) + value);
  }

  /** The total of a metric, over all dimension values unless some are given. */
  total(name: string, dimensions?: Readonly<Record<string, string>>): number {
    if (dimensions) return this.#counters.get(metricKey(name, dimensions)) ?? 0;
    let sum = 0;
    for (const [key, value] of this.#counters) if (key === name || key.startsWith(`${name}|`)) sum += value;
    return sum;
  }

  snapshot(): Record<string, number> {
    return Object.fromEntries(this.#counters);
  }
}

function metricKey(name: string, dimensions?: Readonly<Record<string, string>>): string {
  if (!dimensions) return name;
  const parts = Object.entries(dimensions)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `${k}=${v}`);
  return parts.length > 0 ? `${name}|${parts.join(',')}` : name;
}
